"""Decoders out of the server's hands (issue #17 item 2): outputs are verified in long-lived verifier processes
that run as a uid of their own in an empty network namespace, get open descriptors (never paths), and are killed
and replaced when a check takes too long."""
from __future__ import annotations

import os
import subprocess

import httpx
import psutil
import pytest
from PIL import Image

from appliance.runtime.verifier import UID, Verifier


@pytest.fixture
def verifier():
    v = Verifier(processes=1, timeout_s=30)
    yield v
    v.close()


def gif(path, frames: int, size=(64, 48)) -> None:
    images = [Image.new("P", size, i % 200) for i in range(frames)]
    images[0].save(path, "GIF", save_all=True, append_images=images[1:], duration=40)


def test_it_checks_by_content_through_descriptors(verifier, tmp_path):
    gif(tmp_path / "out.gif", 5)
    assert verifier("image.gif", {"width": 64}, {"gif": tmp_path / "out.gif"}) is None
    assert verifier("image.gif", {"width": 80}, {"gif": tmp_path / "out.gif"}) == \
        "renderer output out.gif is not a valid gif file: 64 pixels wide, expected 80"
    (tmp_path / "thumb.jpg").write_bytes(b"<html>not a jpeg</html>")
    problem = verifier("movie.assemble", {}, {"video": tmp_path / "out.gif", "thumbnail": tmp_path / "thumb.jpg"})
    assert problem is not None and "is not a valid" in problem


def test_a_thumbnail_cut_short_is_refused(verifier, tmp_path):
    """Thumbnails are decoded at 1/8 scale (draft mode), which still entropy-decodes every block: a JPEG whose data
    stops halfway is refused as before."""
    noise = Image.effect_noise((1920, 1080), 64).convert("RGB")
    noise.save(tmp_path / "whole.jpg", quality=90)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[:len(data) // 2])
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=s=64x64:d=0.2", "-pix_fmt", "yuv420p",
                    str(clip)], check=True)
    for name, fine in (("whole.jpg", True), ("half.jpg", False)):
        problem = verifier("movie.scene", {}, {"scene": clip, "thumbnail": tmp_path / name})
        assert (problem is None) == fine, (name, problem)


def test_a_clip_is_checked_by_its_first_picture(verifier, tmp_path):
    """The H.264 check decodes the first keyframe and drains the decoder (renderers.ffmpeg.first_frame), without
    waiting out the B-frame reorder delay: a clip with B-frames passes, one whose coded pictures are junk does not
    (nor one with no picture at all)."""
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=320x240:r=30:d=1", "-c:v", "libx264",
                    "-bf", "3", "-pix_fmt", "yuv420p", str(clip)], check=True)
    thumb = tmp_path / "thumb.jpg"
    Image.new("RGB", (32, 24)).save(thumb)
    size = {"width": 320, "height": 240, "fps": 30}
    assert verifier("movie.scene", size, {"scene": clip, "thumbnail": thumb}) is None
    data = bytearray(clip.read_bytes())
    start = data.index(b"mdat") + 4  # no faststart: the samples come before the moov
    end = data.index(b"moov") - 4
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(data[:start]) + b"\x00" * (end - start) + bytes(data[end:]))
    problem = verifier("movie.scene", size, {"scene": junk, "thumbnail": thumb})
    assert problem is not None and "junk.mp4 is not a valid h264 file" in problem, problem


def test_a_check_past_its_deadline_kills_the_verifier_and_the_next_one_works(tmp_path):
    gif(tmp_path / "long.gif", 400, (320, 240))
    slow = Verifier(processes=1, timeout_s=0.001)
    try:
        assert slow("image.gif", {}, {"gif": tmp_path / "long.gif"}) == "output verification took over 0.001 s"
        slow.timeout_s = 30
        assert slow("image.gif", {}, {"gif": tmp_path / "long.gif"}) is None
    finally:
        slow.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="a uid and a network namespace of its own need root (CI is root)")
def test_the_servers_verifier_runs_unprivileged_without_network(server):
    server.cli("users", "create", "ada")
    job = server.wait(server.submit("ada", "manim", {"code": "from manim import *\nclass A(Scene):\n"
                                                       "    def construct(self):\n        self.add(Dot())\n",
                                                       "className": "A", "width": 160, "height": 90, "fps": 5}))
    assert job["status"] == "completed", job
    found = [p for p in psutil.Process(server.proc.pid).children(recursive=True)
             if "appliance.runtime.verifier" in " ".join(p.cmdline())]
    assert found, "no verifier process"
    for proc in found:
        assert proc.uids().real == proc.uids().effective == UID
        # an empty root of its own: no host file is there to read, not even a world-readable one
        assert os.listdir(f"/proc/{proc.pid}/root") == []
        assert os.stat(f"/proc/{proc.pid}/root").st_dev != os.stat("/").st_dev
        assert os.readlink(f"/proc/{proc.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert os.readlink(f"/proc/{proc.pid}/ns/net") != os.readlink(f"/proc/{server.proc.pid}/ns/net")
        status = open(f"/proc/{proc.pid}/status").read()
        assert "NoNewPrivs:\t1" in status and "Seccomp:\t2" in status, status
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
