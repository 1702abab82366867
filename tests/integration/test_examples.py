"""Every script in examples/ runs as written (issue #21 item 2): bash runs the file itself against a live server
whose first-run keys come from `appliance init`, configured only through the variables the scripts document
(APPLIANCE_URL, the keys, OUT, POLL_S). Offline: a proxy that goes nowhere catches any request to another host,
the server refuses loopback sources, and the movie's media come from examples/media as its assets_dir."""
from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from renderers.ffmpeg import probe, video_stream
from tests.conftest import ROOT, Server

EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("examples"), {
        "APPLIANCE_ASSETS_DIR": str(EXAMPLES / "media"),  # what examples/viralsync.sh tells the reader to set
        "APPLIANCE_ALLOW_LOOPBACK_TARGETS": "false", "APPLIANCE_ALLOW_HTTP_WEBHOOKS": "false"})
    printed = srv.cli("init")  # the first run's keys, as `make run` prints them
    srv.keys = dict(line.split() for line in printed.splitlines() if line.startswith("  "))
    srv.start()
    yield srv
    srv.stop(signal.SIGKILL)


def run_example(server: Server, script: str, out: Path, *args: str, timeout: float = 600) -> str:
    """bash examples/SCRIPT ARGS, from the repository root, with only the documented variables set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_") and "proxy" not in k.lower()}
    env.update({"APPLIANCE_URL": server.url, "KODISC_KEY": server.keys["kodisc"], "OUT": str(out),
                "VIRALSYNC_KEY": server.keys["viralsync"], "RENDERCAD_KEY": server.keys["rendercad"],
                "POLL_S": "0.5",  # RenderCAD allows 120 status polls a minute
                # offline: any host but the appliance goes to a proxy that is not there
                "ALL_PROXY": "http://127.0.0.1:9", "all_proxy": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1",
                "no_proxy": "127.0.0.1"})
    proc = subprocess.run(["bash", str(EXAMPLES / script), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (script, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc.stdout


def no_webhooks(server: Server) -> None:
    with sqlite3.connect(f"file:{server.data_dir / 'appliance.db'}?mode=ro", uri=True) as db:
        assert db.execute("select count(*) from webhook_deliveries").fetchone()[0] == 0


def test_every_example_is_run_here():
    scripts = {p.name for p in EXAMPLES.glob("*.sh")}
    assert scripts == {"kodisc-quickstart.sh", "viralsync.sh", "rendercad-quickstart.sh", "rendercad-video.sh"}
    bodies = [json.loads(p.read_text()) for p in EXAMPLES.glob("*.json")]
    for body in bodies:  # nothing that always fails or leaves a webhook retrying: no placeholder hosts
        text = json.dumps(body)
        assert "example.com" not in text and "your-server" not in text and "callbackUrl" not in body
    media = sum(p.stat().st_size for p in (EXAMPLES / "media").iterdir())
    assert media < 1024 * 1024, media


def test_rendercad_quickstart(appliance, tmp_path):
    out = run_example(appliance, "rendercad-quickstart.sh", tmp_path)
    status = json.loads(out[:out.rindex("}") + 1])
    assert status["status"] == "completed" and status["error_message"] is None, status
    picture = tmp_path / "rendercad-render.jpg"
    assert out.splitlines()[-1] == str(picture)
    with Image.open(picture) as img:
        assert img.format == "JPEG" and img.size == (1024, 1024)


def test_viralsync_minimal(appliance, tmp_path):
    out = run_example(appliance, "viralsync.sh", tmp_path)
    video = tmp_path / "viralsync-minimal.mp4"
    assert out.splitlines()[-1] == str(video)
    stream = video_stream(probe(video))
    assert (stream["width"], stream["height"]) == (1920, 1080)
    no_webhooks(appliance)


@pytest.mark.slow
def test_viralsync_media_from_the_assets_dir(appliance, tmp_path):
    out = run_example(appliance, "viralsync.sh", tmp_path, "examples/viralsync-media.json")
    video = tmp_path / "viralsync-media.mp4"
    assert out.splitlines()[-1] == str(video)
    info = probe(video)
    stream = video_stream(info)
    assert (stream["width"], stream["height"], stream["r_frame_rate"]) == (1280, 720, "30/1")
    assert abs(float(info["format"]["duration"]) - 5.0) < 0.1
    assert any(s["codec_type"] == "audio" for s in info["streams"])
    frame = subprocess.run(["ffmpeg", "-v", "error", "-ss", "0.2", "-i", str(video), "-frames:v", "1", "-f",
                            "image2pipe", "-c:v", "png", "-"], capture_output=True, check=True).stdout
    with Image.open(io.BytesIO(frame)) as img:  # the background clip (testsrc2: many colours), not a flat fill
        assert len(set(img.convert("RGB").resize((64, 36)).getdata())) > 50
    no_webhooks(appliance)


@pytest.mark.slow
def test_kodisc_quickstart(appliance, tmp_path):
    out = run_example(appliance, "kodisc-quickstart.sh", tmp_path)
    assert out.splitlines()[-1] == str(tmp_path / "kodisc-video.mp4")
    stream = video_stream(probe(tmp_path / "kodisc-video.mp4"))
    assert (stream["width"], stream["height"], stream["codec_name"]) == (1280, 720, "h264")
    with Image.open(tmp_path / "kodisc-thumb.jpg") as img:
        assert img.size == (1280, 720)


@pytest.mark.slow
def test_rendercad_image_to_video_to_gif(appliance, tmp_path):
    out = run_example(appliance, "rendercad-video.sh", tmp_path)
    assert out.splitlines()[-2:] == [str(tmp_path / "rendercad-video.mp4"), str(tmp_path / "rendercad-video.gif")]
    info = probe(tmp_path / "rendercad-video.mp4")
    stream = video_stream(info)
    assert (stream["width"], stream["height"]) == (1280, 720) and abs(float(info["format"]["duration"]) - 4) < 0.1
    with Image.open(tmp_path / "rendercad-video.gif") as gif:
        assert gif.format == "GIF" and gif.size == (480, 270) and gif.n_frames == 60


def readme_example_lines() -> list[str]:
    """The commands of the README's Examples block that run a script (the `make run` and `export` lines set up
    what the fixture sets up: the server with assets_dir, the keys)."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("### Examples"):]
    block = block[block.index("```sh\n") + 6:block.index("```", block.index("```sh\n") + 6)]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("examples/")]


def test_the_readmes_example_lines_run_verbatim(appliance, tmp_path):
    """Copy-paste alone: each line of the README's Examples block, as written, through bash -c."""
    lines = readme_example_lines()
    assert len(lines) == 5 and {line.split()[0] for line in lines} == {
        f"examples/{name}" for name in ("kodisc-quickstart.sh", "viralsync.sh", "rendercad-quickstart.sh",
                                        "rendercad-video.sh")}, lines
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_") and "proxy" not in k.lower()}
    env.update({"APPLIANCE_URL": appliance.url, "KODISC_KEY": appliance.keys["kodisc"], "OUT": str(tmp_path),
                "VIRALSYNC_KEY": appliance.keys["viralsync"], "RENDERCAD_KEY": appliance.keys["rendercad"],
                "POLL_S": "0.5", "ALL_PROXY": "http://127.0.0.1:9", "all_proxy": "http://127.0.0.1:9",
                "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    for line in lines:
        proc = subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (line, proc.stdout[-2000:], proc.stderr[-2000:])
        last = Path(proc.stdout.strip().splitlines()[-1])
        assert last.is_file() and last.stat().st_size > 1000, (line, proc.stdout[-500:])
    videos = [p for p in tmp_path.iterdir() if p.suffix == ".mp4"]
    assert videos and all(video_stream(probe(p))["codec_name"] == "h264" for p in videos), videos
    no_webhooks(appliance)
