"""What scene code leaves in its workdir is taken by descriptor, never by path (runtime/intake.py, issue #17 items
1 and 2). Each hostile scene lets the real renderer finish and then swaps one of its outputs for something that is
not a plain file, or for a file in disguise: the job fails at once with a one-line reason, costs nothing, and
its slot and workdir are free again; an undeclared role is never published."""
from __future__ import annotations

import httpx
import pytest

from tests.integration.test_kodisc_api import poll
from tests.integration.test_kodisc_hostile import CREDITS, assert_failed, me_total, request, scene, submit

pytestmark = pytest.mark.slow


@pytest.fixture
def kodisc(make_server):
    server = make_server({"APPLIANCE_CPU_SLOTS": "8"})  # every hostile job at once
    server.cli("users", "create", "mallory", "--credits", str(CREDITS))
    server.auth = {"Authorization": f"Bearer {server.new_key('mallory', 'kodisc')['key']}"}
    return server


def swap(body: str, files_expr: str = "out") -> str:
    """Scene code that lets the renderer write its outputs, then runs ``body`` in the workdir before the result
    goes out (``out`` is the renderer's result; ``files_expr`` what is returned)."""
    lines = "".join(f"    {line}\n" for line in body.strip("\n").splitlines())
    return ("import renderers.manim_scene as _m\n"
            "_orig = _m._write_outputs\n"
            "def _evil(*args, **kwargs):\n"
            "    out = _orig(*args, **kwargs)\n"
            f"{lines}"
            f"    return {files_expr}\n"
            "_m._write_outputs = _evil\n")


CASES = {
    "fifo-captions": (swap("os.remove('captions.vtt')\nos.mkfifo('captions.vtt')"),
                      ("renderer output captions.vtt is not a regular file (a FIFO)",)),
    "symlink-video": (swap("os.remove('video.mp4')\nos.symlink('/etc/passwd', 'video.mp4')"),
                      ("renderer output video.mp4 is a symbolic link",)),
    "socket-thumbnail": (swap("os.remove('thumb.jpg')\n"
                              "s = socket.socket(socket.AF_UNIX)\ns.bind('thumb.jpg')"),
                         ("renderer output thumb.jpg is not a regular file (a socket)",)),
    "directory-video": (swap("os.remove('video.mp4')\nos.mkdir('video.mp4')"),
                        ("renderer output video.mp4 is not a regular file (a directory)",)),
}


def test_links_fifos_sockets_and_directories_are_refused_and_nothing_wedges(kodisc):
    jobs = {case: submit(kodisc, request(scene(code), case)) for case, (code, _) in CASES.items()}
    for case, job_id in jobs.items():
        job = poll(kodisc, job_id, kodisc.auth, timeout=120)
        assert_failed(job, case, *CASES[case][1])
    assert me_total(kodisc) == CREDITS
    work = kodisc.data_dir / "work"
    assert not (list(work.iterdir()) if work.exists() else []), "a workdir or a staging copy was left"
    health = httpx.get(f"{kodisc.url}/healthz", timeout=10).json()
    assert health["used"]["cpu"] == 0 and health["used"]["mem_mb"] == 0, health


def test_a_playlist_named_video_mp4_is_not_published_and_undeclared_roles_are_dropped(kodisc):
    first = poll(kodisc, submit(kodisc, request(scene("self.add(Square())"), "first")), kodisc.auth)
    assert first["status"] == "completed", first
    target = kodisc.data_dir / "outputs" / first["jobId"] / "video.mp4"
    assert target.is_file()
    # An HLS playlist (and an ffconcat list) that names the first job's output by its host path: opened by
    # path, ffmpeg's demuxers would follow it and the check would pass on someone else's video.
    playlist = (f"#EXTM3U\\n#EXT-X-VERSION:3\\n#EXT-X-TARGETDURATION:2\\n#EXT-X-MEDIA-SEQUENCE:0\\n"
                f"#EXTINF:1.0,\\n{target}\\n#EXT-X-ENDLIST\\n")
    hls = swap(f"open('video.mp4', 'w').write('{playlist}')")
    concat = swap(f"open('video.mp4', 'w').write('ffconcat version 1.0\\nfile {target}\\n')")
    for case, code in (("hls", hls), ("concat", concat)):
        job = poll(kodisc, submit(kodisc, request(scene(code), case)), kodisc.auth)
        assert_failed(job, case, "renderer output video.mp4 is not a valid h264 file")
    # A role the renderer does not make ("secret") is dropped: the job completes without it.
    extra = swap("open('secret.txt', 'w').write('published?')\nout['files']['secret'] = 'secret.txt'")
    job = poll(kodisc, submit(kodisc, request(scene(extra), "extra-role")), kodisc.auth)
    assert job["status"] == "completed", job["error"]
    assert set(job["result"]) <= {"video", "thumbnail", "captions", "image"}, job
    published = {p.name for p in (kodisc.data_dir / "outputs" / job["jobId"]).iterdir()}
    assert "secret.txt" not in published, published
