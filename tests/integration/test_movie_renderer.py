"""The movie renderers for real: local media, real ffmpeg, results probed and decoded to pixels.
Scenes render at 640x360 (the seed examples scaled by 1/3) so the whole file stays well under two minutes."""
from __future__ import annotations

import functools
import http.server
import json
import math
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import ffmpeg as ffmpeg_python
import numpy as np
import pytest
from PIL import Image

from appliance.services.pipelines import media as sources
from renderers import ffmpeg as ff
from renderers.base import NullReporter, RenderError
from renderers.movie.assemble import render_assemble
from renderers.movie.compose import plan_blocks, render_scene
from renderers.movie.spec import scene_cache_key, scene_sources, validate_and_normalize

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
W, H = 640, 360


# --- media and helpers ----------------------------------------------------------------------------------------

def _lavfi(out: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args, str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    _lavfi(folder / "city.mp4", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=2", "-f", "lavfi",
           "-i", "sine=frequency=1000:duration=2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-shortest")
    _lavfi(folder / "upbeat.mp3", "-f", "lavfi", "-i", "sine=frequency=440:duration=8:sample_rate=44100",
           "-c:a", "libmp3lame")
    Image.new("RGB", (200, 60), "white").save(folder / "logo-white.png")
    for name, color in (("white", "white"), ("black", "black"), ("red", "#ff0000"), ("green", "#00ff00")):
        Image.new("RGB", (100, 100), color).save(folder / f"{name}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return folder


class RecordingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[tuple[str, int]] = []  # (path, status) of every response

    def log_message(self, *args) -> None:
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        self.requests.append((self.path, code))
        super().send_response(code, message)


@pytest.fixture(scope="module")
def media_server(media):
    handler = functools.partial(RecordingHandler, directory=str(media))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def scaled_example(name: str, factor: float) -> dict:
    """A seed example's movie with the canvas, positions, sizes and font sizes scaled."""
    movie = json.loads((EXAMPLES / name).read_text())["movie"]
    movie["width"], movie["height"] = round(movie["width"] * factor), round(movie["height"] * factor)
    for layer in (layer for scene in movie["scenes"] for layer in scene["layers"]):
        layer["position"] = {k: v * factor for k, v in layer["position"].items()}
        layer["size"] = {k: v * factor for k, v in layer["size"].items()}
        if "fontSize" in layer:
            layer["fontSize"] *= factor
    return movie


def task(scene: dict, workdir: Path, media: Path, fps: int = 30, files: dict[str, str] | None = None) -> dict:
    """A scene task input with its media copied into the workdir, as the server does."""
    workdir.mkdir(parents=True, exist_ok=True)
    names = {}
    for source, path in (files or {}).items():
        shutil.copy(media / path if not Path(path).is_absolute() else path, workdir / Path(path).name)
        names[source] = Path(path).name
    return {"scene": scene, "width": W, "height": H, "fps": fps, "sources": names}


def decode(path: Path) -> np.ndarray:
    """Every frame as an RGB array: frames x height x width x 3."""
    raw, _ = (ffmpeg_python.input(str(path)).output("pipe:", format="rawvideo", pix_fmt="rgb24")
              .run(capture_stdout=True, quiet=True))
    return np.frombuffer(raw, np.uint8).reshape(-1, H, W, 3)


def probe_streams(path: Path) -> dict[str, dict]:
    info = ff.probe(path)
    return {stream["codec_type"]: stream for stream in info["streams"]}


def rms_db(path: Path, start: float, end: float) -> float:
    """The level of a file's audio between two times, in dBFS."""
    raw, _ = (ffmpeg_python.input(str(path), ss=start, t=end - start)
              .output("pipe:", format="f32le", ar=48000).run(capture_stdout=True, quiet=True))
    samples = np.frombuffer(raw, np.float32)
    return 20 * math.log10(max(float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))), 1e-10))


def packet_sizes(path: Path) -> list[int]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=size",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    return [int(line) for line in out.split()]


def extradata(path: Path) -> str:
    """The H.264 stream's SPS/PPS as ffprobe dumps them."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams", "-show_data",
                          str(path)], capture_output=True, text=True, check=True).stdout
    return out.split("extradata=", 1)[1].split("extradata_size", 1)[0]


def near(pixel, expected, tolerance: int = 14) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, expected, strict=True))


def assemble(workdir: Path, scene_files: list[Path]) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    names = [f"scene_{index:03d}.mp4" for index in range(len(scene_files))]
    for name, path in zip(names, scene_files, strict=True):
        shutil.copy(path, workdir / name)
    return render_assemble({"scenes": names}, workdir, NullReporter())


# --- the seed examples ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_minimal_example_through_the_command_line(tmp_path, media):
    movie = validate_and_normalize(scaled_example("viralsync-minimal.json", 1 / 3))
    input_path = tmp_path / "input.json"
    input_path.write_text(json.dumps(task(movie["scenes"][0], tmp_path / "scene", media)))
    command = [sys.executable, "-m", "renderers", "movie.scene", str(input_path), str(tmp_path / "scene")]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    messages = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert messages[-1]["outputs"]["meta"].items() >= {"duration": 5.0, "frames": 150, "width": W, "height": H,
                                                       "threads": 0}.items()  # threads 0: no budget given, all cores
    assert [m["fraction"] for m in messages if m["type"] == "progress"][-1] == 1.0
    scene_file = tmp_path / "scene" / "scene.mp4"
    streams = probe_streams(scene_file)
    assert (streams["video"]["codec_name"], streams["video"]["pix_fmt"], streams["video"]["nb_read_frames"]) == \
        ("h264", "yuv420p", "150")
    assert (streams["audio"]["codec_name"], streams["audio"]["sample_rate"], streams["audio"]["channels"]) == \
        ("aac", "48000", 2)
    assert ff.mean_volume(scene_file) < -80  # a silent track, present so that scenes concat
    frames = decode(scene_file)
    assert near(frames[75, 5, 5], (0x1a, 0x1a, 0x2e), 6)
    box = frames[75, 154:207, 120:520]  # the headline's box
    assert box.max() > 230 and frames[75, 215:, :].max() < 80  # white text inside the box, none below it
    left = sorted(p.name for p in (tmp_path / "scene").iterdir() if p.name != "preview.jpg")  # the live frame
    assert left == ["last.jpg", "scene.mp4"]  # nothing else: scene_tmp (blocks, audio.m4a) is removed
    assert messages[-1]["outputs"]["files"] == {"scene": "scene.mp4", "thumbnail": "last.jpg"}
    last = np.asarray(Image.open(tmp_path / "scene" / "last.jpg").convert("RGB"), dtype=np.int16)
    assert last.shape == frames[-1].shape and np.abs(last - frames[-1].astype(np.int16)).mean() < 4  # the last frame


@pytest.fixture(scope="module")
def full_movie(media, media_server, tmp_path_factory):
    """The full seed example, its URLs pointing at local media, fetched as the server does, then rendered."""
    root = tmp_path_factory.mktemp("full")
    movie = scaled_example("../docs/viralsync-full-example.json", 1 / 3)  # the seed's, with placeholder hosts
    for layer in (layer for scene in movie["scenes"] for layer in scene["layers"] if "source" in layer):
        layer["source"] = f"{media_server}/{layer['source'].rsplit('/', 1)[1]}"
    movie = validate_and_normalize(movie)
    fetched = {source: sources.fetch_source(source, root / "cache", media, max_bytes=10 << 20, timeout_s=10,
                                            allow_loopback=True)
               for scene in movie["scenes"] for source in scene_sources(scene)}
    results, reports = [], []
    for index, scene in enumerate(movie["scenes"]):
        report = NullReporter()
        workdir = root / f"scene_{index}"
        results.append(render_scene(task(scene, workdir, media, files={s: str(p) for s, p in fetched.items()
                                                                       if s in scene_sources(scene)}),
                                    workdir, report))
        reports.append(report)
    scene_files = [root / f"scene_{index}" / "scene.mp4" for index in range(len(movie["scenes"]))]
    outputs = assemble(root / "assemble", scene_files)
    return {"movie": movie, "fetched": fetched, "results": results, "reports": reports, "scenes": scene_files,
            "outputs": outputs, "output": root / "assemble" / "output.mp4", "root": root}


@pytest.mark.slow
def test_full_example_assembles_by_stream_copy(full_movie):
    outputs, output = full_movie["outputs"], full_movie["output"]
    assert outputs["files"] == {"video": "output.mp4", "thumbnail": "thumb.jpg"}
    assert abs(outputs["meta"]["duration"] - 10) <= 1 / 30
    assert (outputs["meta"]["width"], outputs["meta"]["height"]) == (W, H)
    assert outputs["meta"]["fileSize"] == output.stat().st_size
    streams = probe_streams(output)
    assert (streams["video"]["codec_name"], streams["video"]["r_frame_rate"], streams["video"]["nb_read_frames"]) == \
        ("h264", "30/1", "300")
    assert (streams["audio"]["codec_name"], streams["audio"]["sample_rate"], streams["audio"]["channels"]) == \
        ("aac", "48000", 2)
    assert abs(float(streams["audio"]["duration"]) - 10) <= 1 / 30
    # Copied, not re-encoded: the output's video packets are the scenes' packets, in order (an IDR frame also
    # carries the parameter sets in-band after the concat demuxer, a few dozen bytes; a stills scene has one IDR
    # per block of a second).
    first, second = full_movie["scenes"]  # one from the "layered" path, one from the "stills" path
    assert extradata(first) == extradata(second) == extradata(output)
    copied, at = packet_sizes(output), 0
    for scene in full_movie["scenes"]:
        sizes = packet_sizes(scene)
        part, at = copied[at:at + len(sizes)], at + len(sizes)
        grown = [c - s for c, s in zip(part, sizes, strict=True) if c != s]
        assert all(0 < extra < 100 for extra in grown) and len(grown) <= len(sizes) // 30 + 1
    assert at == len(copied)
    with Image.open(full_movie["root"] / "assemble" / "thumb.jpg") as thumb:
        assert (thumb.format, thumb.size) == ("JPEG", (W, H))


@pytest.mark.slow
def test_full_example_audio_levels(full_movie, media):
    first, second = full_movie["scenes"]
    source_level = ff.mean_volume(media / "upbeat.mp3")
    # bg_music plays at volume 0.35 (-9.1 dB); the background video's 1 kHz tone is muted.
    assert ff.mean_volume(first) - source_level == pytest.approx(20 * math.log10(0.35), abs=1.0)
    assert ff.mean_volume(second) < -80


@pytest.mark.slow
def test_full_example_pictures(full_movie):
    meta = [result["meta"] for result in full_movie["results"]]
    assert [{k: m[k] for k in ("duration", "frames", "width", "height")} for m in meta] == \
        [{"duration": 6.0, "frames": 180, "width": W, "height": H},
         {"duration": 4.0, "frames": 120, "width": W, "height": H}]
    frames = decode(full_movie["output"])
    assert len(frames) == 300
    logo = (slice(22, 38), slice(30, 90))  # the logo box is (26.7, 20) 66.7x20
    assert frames[90][logo].min() > 225  # t=3: white logo over the video
    assert frames[5][logo].max() < 200  # t=0.17: the logo starts at 0.5 s
    # The background video at opacity 0.65 over black: next to nothing brighter than 0.65 x 255 (saturated
    # colours overshoot a little through 4:2:0 chroma).
    assert np.percentile(frames[90, 250:, :], 99.5) < 175 and frames[90, 250:, :].max() > 120
    assert not np.array_equal(frames[60, 250:], frames[90, 250:])  # it moves
    title = frames[90, 134:199, 67:573]
    assert title.max() > 230
    # The headline is shrunk to fit its box whole (textFit defaults to shrink): its glyphs end above the box's
    # bottom edge instead of being cut flat there, and "Off" at its right end is drawn.
    white_rows = np.flatnonzero((title.min(axis=2) > 200).any(axis=1))
    assert white_rows.max() < title.shape[0] - 3, white_rows
    assert (title[:, 380:].min(axis=2) > 200).any()
    assert near(frames[200, 5, 5], (0x0f, 0x17, 0x2a), 6)  # scene 2's bgColor
    cta = frames[200, 154:207, 120:520]
    assert cta[..., 2].max() > 220 and cta[..., 0].min() < 40  # #00d4ff text


@pytest.mark.slow
def test_full_example_cache_keys(full_movie):
    digests = {source: sources.file_digest(path) for source, path in full_movie["fetched"].items()}
    first, second = full_movie["movie"]["scenes"]
    key = scene_cache_key(first, W, H, 30, digests)
    assert key == scene_cache_key(json.loads(json.dumps(first)), W, H, 30, dict(digests))
    assert key != scene_cache_key(second, W, H, 30, digests)


@pytest.mark.slow
def test_progress_is_reported(full_movie):
    for report in full_movie["reports"]:
        assert report.fractions[-1] == 1.0 and len(report.fractions) > 3
        assert report.fractions == sorted(report.fractions)


# --- pixels: static layers (the "stills" path) ----------------------------------------------------------------

def image_layer(layer_id: str, file: str, x: float, y: float, size: float = 100, **extra) -> dict:
    return {"id": layer_id, "type": "image", "source": file, "position": {"x": x, "y": y},
            "size": {"width": size, "height": size}, **extra}


STATIC_SCENE = {
    "id": "pixels", "duration": 4, "bgColor": "#336699", "layers": [
        image_layer("under", "black.png", 20, 20),
        image_layer("half", "white.png", 20, 20, zIndex=1, transform={"opacity": 0.5}),
        image_layer("red", "red.png", 200, 20, zIndex=5),
        image_layer("green", "green.png", 250, 20, zIndex=3),
        {"id": "caption", "type": "text", "text": "Lorem ipsum dolor sit amet consectetur adipiscing elit sed do",
         "position": {"x": 20, "y": 180}, "size": {"width": 300, "height": 100}, "fontSize": 40},
        image_layer("fader", "white.png", 400, 200, size=60, startTime=0.5, duration=3.5, fadeIn=1),
        image_layer("blink", "white.png", 600, 80, size=40, startTime=1, duration=0.5),
        {**image_layer("bar", "green.png", 500, 40), "size": {"width": 100, "height": 20}, "fit": "fill",
         "transform": {"rotation": 90}},
        image_layer("small", "white.png", 440, 120, size=40, transform={"scale": 0.5}),
        {"id": "boxed", "type": "text", "text": "Hi", "backgroundColor": "#ff0000", "padding": 10, "fontSize": 30,
         "textAlign": "right", "fontWeight": "700", "position": {"x": 380, "y": 290},
         "size": {"width": 240, "height": 60}},
        {"id": "music", "type": "audio", "source": "upbeat.mp3", "startTime": 2, "volume": 0.5, "trimStart": 1},
    ]}


@pytest.fixture(scope="module")
def static_render(media, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("static")
    scene = validate_and_normalize({"width": W, "height": H, "fps": 20, "scenes": [STATIC_SCENE]})["scenes"][0]
    files = {name: name for name in ("black.png", "white.png", "red.png", "green.png", "upbeat.mp3")}
    report = NullReporter()
    result = render_scene(task(scene, workdir, media, fps=20, files=files), workdir, report)
    return result, decode(workdir / "scene.mp4"), report, workdir / "scene.mp4"


@pytest.mark.slow
def test_static_scene_timing_and_format(static_render):
    result, frames, report, _ = static_render
    assert result["meta"].items() >= {"duration": 4.0, "frames": 80, "width": W, "height": H}.items()
    assert len(frames) == 80
    assert report.fractions[-1] == 1.0


@pytest.mark.slow
def test_static_scene_background_opacity_and_z_order(static_render):
    frames = static_render[1]
    for frame in (frames[0], frames[79]):
        assert near(frame[2, 2], (0x33, 0x66, 0x99), 6) and near(frame[357, 637], (0x33, 0x66, 0x99), 6)
        assert near(frame[70, 70], (128, 128, 128), 8)  # white at opacity 0.5 over black
        assert near(frame[70, 225], (255, 0, 0)) and near(frame[70, 275], (255, 0, 0))  # red (z 5) over green
        assert near(frame[70, 325], (0, 255, 0))


@pytest.mark.slow
def test_static_scene_text_stays_in_its_box(static_render):
    frame = static_render[1][40]
    box = frame[180:280, 20:320]
    assert (box.min(axis=2) > 200).sum() > 300  # plenty of white glyph pixels
    outside = np.concatenate([frame[282:, :370].reshape(-1, 3), frame[140:178, :190].reshape(-1, 3)])
    assert np.abs(outside.astype(int) - (0x33, 0x66, 0x99)).max() <= 8  # the wrapped overflow is clipped


@pytest.mark.slow
def test_static_scene_fade_in_and_layer_windows(static_render):
    frames = static_render[1]
    fader = lambda n: int(frames[n, 230, 430].mean())  # noqa: E731
    background = int(np.mean((0x33, 0x66, 0x99)))
    assert abs(fader(5) - background) < 8  # before its start
    assert abs(fader(20) - (background + 255) / 2) < 12  # half way through the one-second fade
    assert fader(40) > 245 and fader(79) > 245
    blink = lambda n: int(frames[n, 100, 620].mean())  # noqa: E731
    assert blink(19) < 150 and blink(20) > 245 and blink(29) > 245 and blink(30) < 150


@pytest.mark.slow
def test_static_scene_transforms_and_text_box(static_render):
    frame = static_render[1][60]
    background = (0x33, 0x66, 0x99)
    assert near(frame[10, 550], (0, 255, 0)) and near(frame[90, 550], (0, 255, 0))  # the 100x20 bar turned upright
    assert near(frame[50, 510], background) and near(frame[50, 590], background)
    assert near(frame[140, 460], (255, 255, 255)) and near(frame[124, 444], background)  # 20x20 about its centre
    assert near(frame[295, 385], (255, 0, 0)) and near(frame[345, 615], (255, 0, 0))  # background colour + padding
    text = frame[300:340, 390:610].min(axis=2) > 200
    assert text[:, 170:].any() and not text[:, :120].any()  # right-aligned


@pytest.mark.slow
def test_static_scene_audio_starts_at_its_start_time(static_render, media):
    scene_file = static_render[3]
    assert rms_db(scene_file, 0, 1.9) < -80
    level = rms_db(scene_file, 2.1, 3.9) - rms_db(media / "upbeat.mp3", 1, 3)  # trimStart 1, volume 0.5
    assert level == pytest.approx(20 * math.log10(0.5), abs=1)


def _pcm(path: Path) -> np.ndarray:
    raw, _ = (ffmpeg_python.input(str(path)).output("pipe:", format="f32le", ac=2, ar=48000)
              .run(capture_stdout=True, quiet=True))
    return np.frombuffer(raw, np.float32)


def test_scene_audio_keeps_music_close_to_its_source(tmp_path):
    """A soundtrack at volume 1 through a scene: the scene's AAC decodes to within 40 dB of the source (the "fast"
    coder at 192 kb/s: ~55 dB for tonal music; ffmpeg's default "twoloop" coder gave 31 dB at twice the CPU)."""
    tones = ("aevalsrc=0.3*sin(2*PI*220*t)*(1+0.5*sin(2*PI*2*t))+0.2*sin(2*PI*330*t+sin(2*PI*5*t))"
             "+0.05*sin(2*PI*5000*t)|0.3*sin(2*PI*277*t)+0.2*sin(2*PI*440*t)+0.05*sin(2*PI*7000*t):s=48000:d=2")
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", tones, str(tmp_path / "tones.wav")], check=True)
    scene = validate_and_normalize({"width": W, "height": H, "fps": 10, "scenes": [{"id": "music", "duration": 2,
        "layers": [{"id": "song", "type": "audio", "source": "tones.wav", "startTime": 0, "duration": 2}]}]})
    workdir = tmp_path / "scene"
    render_scene(task(scene["scenes"][0], workdir, tmp_path, fps=10, files={"tones.wav": "tones.wav"}), workdir,
                 NullReporter())
    source, scene_audio = _pcm(tmp_path / "tones.wav"), _pcm(workdir / "scene.mp4")
    inner = slice(2 * 4800, 2 * 91200)  # 0.1-1.9 s, both channels interleaved: away from the coder's edges
    error = np.mean((source[inner] - scene_audio[inner]) ** 2)
    assert 10 * math.log10(np.mean(source[inner] ** 2) / error) > 40


def test_plan_blocks_repeats_long_pictures():
    parts = [("a", 15), ("b", 15), ("c", 125), ("d", 10)]
    blocks, playlist = plan_blocks(parts, 30)
    assert blocks == [[("a", 15), ("b", 15)], [("c", 30)], [("c", 5), ("d", 10)]]
    assert playlist == [0, 1, 1, 1, 1, 2]
    assert sum(sum(count for _, count in blocks[i]) for i in playlist) == 165
    assert plan_blocks([("a", 59)], 30) == ([[("a", 59)]], [0])


# --- pixels: video layers (the "layered" path) ----------------------------------------------------------------

@pytest.fixture(scope="module")
def layered_frames(media, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("layered")
    scene = validate_and_normalize({"width": W, "height": H, "fps": 20, "scenes": [{
        "id": "video", "duration": 2, "layers": [
            {"id": "clip", "type": "video", "source": "city.mp4", "position": {"x": 320, "y": 40},
             "size": {"width": 240, "height": 135}, "fit": "fill", "zIndex": 2, "volume": 0.5},
            image_layer("half", "white.png", 20, 20, size=80, transform={"opacity": 0.5}),
            image_layer("red", "red.png", 90, 200, zIndex=2),
            image_layer("green", "green.png", 40, 200, zIndex=1),
            image_layer("fader", "white.png", 560, 280, size=60, fadeIn=1),
            {"id": "turned", "type": "video", "source": "city.mp4", "position": {"x": 260, "y": 215},
             "size": {"width": 160, "height": 90}, "transform": {"rotation": 90}, "trimStart": 1, "mute": True},
        ]}]})["scenes"][0]
    files = {name: name for name in ("city.mp4", "white.png", "red.png", "green.png")}
    result = render_scene(task(scene, workdir, media, fps=20, files=files), workdir, NullReporter())
    return decode(workdir / "scene.mp4"), workdir / "scene.mp4", result


@pytest.mark.slow
def test_layered_scene_gives_its_last_frame_for_the_thumbnail(layered_frames):
    """The same ffmpeg writes the last frame as a JPEG: a movie that ends on a video scene needs no decode of the
    finished movie for its thumbnail (assemble.py takes the last scene's)."""
    frames, scene_file, result = layered_frames
    assert result["files"] == {"scene": "scene.mp4", "thumbnail": "last.jpg"}
    last = np.asarray(Image.open(scene_file.parent / "last.jpg").convert("RGB"), dtype=np.int16)
    distances = [np.abs(last - frame.astype(np.int16)).mean() for frame in frames[-4:]]
    assert last.shape == frames[-1].shape and min(distances) == distances[-1] < 4, distances  # the last, not one before


@pytest.mark.slow
def test_layered_scene_video_moves_inside_its_box(layered_frames):
    frames = layered_frames[0]
    assert len(frames) == 40
    box = (slice(50, 165), slice(330, 550))
    assert np.abs(frames[10][box].astype(int) - frames[30][box].astype(int)).mean() > 5
    assert frames[10, 30:36, 300:316].max() < 12 and frames[10, 180:190, 400:500].max() < 12  # black outside it


@pytest.mark.slow
def test_layered_scene_sprites(layered_frames):
    frames = layered_frames[0]
    assert near(frames[10, 60, 60], (128, 128, 128), 8)
    assert near(frames[10, 250, 115], (255, 0, 0)) and near(frames[10, 250, 65], (0, 255, 0))
    fader = lambda n: int(frames[n, 310, 590].mean())  # noqa: E731
    assert fader(0) < 10 and abs(fader(10) - 128) < 16 and fader(30) > 245


@pytest.mark.slow
def test_layered_scene_rotates_video(layered_frames):
    frame = layered_frames[0][10]
    assert frame[185:335, 300:380].mean() > 60  # the 160x90 box turned upright: 90x160 about (340, 260)
    assert frame[220:300, 262:286].max() < 12 and frame[220:300, 394:418].max() < 12


@pytest.mark.slow
def test_layered_scene_keeps_the_video_sound(layered_frames):
    assert -35 < ff.mean_volume(layered_frames[1]) < -20  # the clip's tone at volume 0.5


# --- failures -------------------------------------------------------------------------------------------------

def test_undecodable_image_names_the_layer(media, tmp_path):
    scene = validate_and_normalize({"width": W, "height": H, "scenes": [{
        "id": "bad", "duration": 1, "layers": [image_layer("logo", "broken.png", 0, 0)]}]})["scenes"][0]
    with pytest.raises(RenderError, match=r"^layer 'logo': cannot decode image"):
        render_scene(task(scene, tmp_path, media, files={"broken.png": "broken.png"}), tmp_path, NullReporter())


def test_undecodable_video_names_the_layer(media, tmp_path):
    scene = validate_and_normalize({"width": W, "height": H, "scenes": [{
        "id": "bad", "duration": 1, "layers": [{"id": "clip", "type": "video", "source": "broken.png"}]}]})
    with pytest.raises(RenderError, match=r"^layer 'clip': cannot decode video"):
        render_scene(task(scene["scenes"][0], tmp_path, media, files={"broken.png": "broken.png"}), tmp_path,
                     NullReporter())


def test_missing_source_names_the_layer(tmp_path, media):
    scene = validate_and_normalize({"width": W, "height": H, "scenes": [{
        "id": "bad", "duration": 1, "layers": [image_layer("logo", "nowhere.png", 0, 0)]}]})["scenes"][0]
    with pytest.raises(RenderError, match=r"^layer 'logo': source 'nowhere.png' was not provided"):
        render_scene(task(scene, tmp_path, media), tmp_path, NullReporter())


def test_assemble_refuses_missing_scene_files(tmp_path):
    with pytest.raises(RenderError, match="scene file '../x.mp4' is missing"):
        render_assemble({"scenes": ["../x.mp4"]}, tmp_path, NullReporter())
