"""Layer timing, source reuse, alpha and thread use of the movie renderer, for real (issue #24).

Media are made with ffmpeg here (tests/media/movie.py); scenes go through ``render_scene`` and are decoded back
to pixels. The ramp clip's brightness tells which of its own frames a layer shows at a given scene time.
"""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from renderers.base import NullReporter
from renderers.movie.compose import render_scene
from renderers.movie.spec import validate_and_normalize
from tests.media import movie as m

W, H, FPS = 640, 360, 25
WHITE = (255, 255, 255)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("layer-media")
    m.ramp_clip(folder / "ramp.mp4", audio=True)
    m.ramp_clip(folder / "ramp10.mp4", rate=10)
    m.ramp_clip(folder / "ramp50.mp4", rate=50)
    m.ramp_clip(folder / "short.mp4", seconds=1)
    m.tone(folder / "tone.m4a")
    return folder


def video(layer_id: str, source: str, x: float = 0, y: float = 0, w: float = W, h: float = H, **extra) -> dict:
    return {"id": layer_id, "type": "video", "source": source, "position": {"x": x, "y": y},
            "size": {"width": w, "height": h}, "fit": "fill", **extra}


def render(scene: dict, media: Path, workdir: Path, *, fps: int = FPS, threads: int = 0,
           size: tuple[int, int] = (W, H)) -> Path:
    """Render one scene with its sources copied into the workdir, as the server stages them."""
    normalized = validate_and_normalize({"width": size[0], "height": size[1], "fps": fps,
                                         "scenes": [scene]})["scenes"][0]
    workdir.mkdir(parents=True, exist_ok=True)
    names = {}
    for layer in normalized["layers"]:
        if layer.get("source"):
            shutil.copy(media / layer["source"], workdir / layer["source"])
            names[layer["source"]] = layer["source"]
    task = {"scene": normalized, "width": size[0], "height": size[1], "fps": fps, "sources": names,
            "threads": threads}
    render_scene(task, workdir, NullReporter())
    return workdir / "scene.mp4"


def level(frame: np.ndarray, box: tuple[slice, slice] = (slice(None), slice(None))) -> float:
    return float(frame[box].mean())


def white(frame: np.ndarray, box: tuple[slice, slice] = (slice(None), slice(None))) -> bool:
    return bool(frame[box].min() > 245)


# --- 1. timing by presentation time ----------------------------------------------------------------------------

TIMING_CASES = {  # name -> (layer fields, clip, clip rate, source time shown at scene time t: f(t))
    "late": ({"startTime": 2, "duration": 2}, "ramp.mp4", 25, lambda t: t - 2),
    "late-trimmed": ({"startTime": 2, "duration": 2, "trimStart": 1}, "ramp.mp4", 25, lambda t: t - 1),
    "late-10fps": ({"startTime": 2, "duration": 2}, "ramp10.mp4", 10, lambda t: t - 2),
    "late-50fps": ({"startTime": 1.5, "duration": 2.5}, "ramp50.mp4", 50, lambda t: t - 1.5),
    "shorter-than-layer": ({"startTime": 2, "duration": 2.5}, "short.mp4", 25, lambda t: min(t - 2, 0.96)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", TIMING_CASES)
def test_video_layer_plays_on_the_scene_clock(case, media, tmp_path):
    fields, clip, rate, shown = TIMING_CASES[case]
    scene = {"id": "s", "duration": 5, "bgColor": "#ffffff", "layers": [video("v", clip, **fields)]}
    frames = m.frames(render(scene, media, tmp_path))
    assert len(frames) == 5 * FPS
    start, stop = fields["startTime"], fields["startTime"] + fields["duration"]
    for t in (start - 0.5, stop + 0.2):
        if 0 <= t < 5:
            assert white(m.at(frames, t, FPS)), f"{case}: the layer shows at {t} s, outside its window"
    for t in (start + 0.2, (start + stop) / 2, stop - 0.2):
        expected = m.source_level(media / clip, shown(t), rate)
        got = level(m.at(frames, t, FPS))
        assert abs(got - expected) < 6, f"{case}: at {t} s the layer shows level {got:.1f}, expected {expected:.1f}"


@pytest.mark.slow
def test_a_held_last_frame_still_fades_out(media, tmp_path):
    """A 1 s clip in a 2.5 s layer holds its last frame; the layer's fade-out fades that held frame."""
    scene = {"id": "s", "duration": 5, "bgColor": "#ffffff", "layers": [
        video("v", "short.mp4", startTime=2, duration=2.5, fadeOut=1)]}
    frames = m.frames(render(scene, media, tmp_path))
    held = m.source_level(media / "short.mp4", 0.96, 25)
    assert abs(level(m.at(frames, 3.4, FPS)) - held) < 6  # held, before the fade
    halfway = level(m.at(frames, 4.0, FPS))  # half way through the fade: half held frame, half white
    assert abs(halfway - (held + 255) / 2) < 12, (halfway, held)
    assert white(m.at(frames, 4.6, FPS))


@pytest.mark.slow
def test_late_sprites_and_sound_in_a_layered_scene(media, tmp_path):
    """Text and image layers and audio that start late, beside a video: visible/audible only in their window."""
    box = {"position": {"x": 400, "y": 40}, "size": {"width": 200, "height": 100}}
    scene = {"id": "s", "duration": 5, "bgColor": "#ffffff", "layers": [
        video("v", "ramp.mp4", w=320, h=180, volume=0),
        {"id": "t", "type": "text", "text": "", "backgroundColor": "#0000ff", **box, "startTime": 2, "duration": 1},
        {"id": "f", "type": "text", "text": "", "backgroundColor": "#00ff00", "position": {"x": 400, "y": 200},
         "size": {"width": 200, "height": 100}, "startTime": 1, "duration": 3, "fadeIn": 1},
        {"id": "a", "type": "audio", "source": "tone.m4a", "startTime": 2.5, "duration": 1},
    ]}
    out = render(scene, media, tmp_path)
    frames = m.frames(out)
    blue, green = (slice(60, 120), slice(420, 580)), (slice(220, 280), slice(420, 580))
    assert white(m.at(frames, 1.8, FPS), blue) and white(m.at(frames, 3.2, FPS), blue)
    assert m.at(frames, 2.5, FPS)[blue].mean(axis=(0, 1))[2] > 240 and m.at(frames, 2.5, FPS)[blue][..., 0].max() < 20
    assert white(m.at(frames, 0.8, FPS), green)
    assert 100 < m.at(frames, 1.5, FPS)[green][..., 0].mean() < 160  # half way through its fade-in
    assert m.at(frames, 3, FPS)[green][..., 0].max() < 20
    assert m.rms_db(out, 0.2, 2.4) < -80 and m.rms_db(out, 3.6, 4.9) < -80
    assert m.rms_db(out, 2.6, 3.4) > -20


# --- 2. the same source in several layers ------------------------------------------------------------------------

@pytest.mark.slow
def test_one_source_in_several_video_and_audio_layers(media, tmp_path):
    left, right = (slice(40, 140), slice(20, 300)), (slice(40, 140), slice(340, 620))
    scene = {"id": "s", "duration": 5, "bgColor": "#ffffff", "layers": [
        video("a", "ramp.mp4", 0, 0, 320, 180, startTime=0, duration=4),
        video("b", "ramp.mp4", 320, 0, 320, 180, startTime=2, duration=3),
        video("c", "ramp.mp4", 0, 180, 320, 180, startTime=1, trimStart=2, duration=2, mute=True),
        {"id": "t1", "type": "audio", "source": "tone.m4a", "startTime": 0},
        {"id": "t2", "type": "audio", "source": "tone.m4a", "startTime": 2},
    ]}
    out = render(scene, media, tmp_path)
    frames = m.frames(out)
    ramp = media / "ramp.mp4"
    for t, box, source_time in ((1, left, 1), (3, left, 3), (3, right, 1), (4.5, right, 2.5),
                                (2, (slice(220, 320), slice(20, 300)), 3)):
        expected = m.source_level(ramp, source_time, 25)
        assert abs(level(m.at(frames, t, FPS), box) - expected) < 6, (t, source_time)
    assert white(m.at(frames, 1, FPS), right)
    # two copies of one 500 Hz tone, 2 s (1000 periods) apart, add in phase: +6 dB once the second starts
    assert m.rms_db(out, 2.2, 3.8) - m.rms_db(out, 0.2, 1.8) == pytest.approx(6.0, abs=0.5)


def test_one_decode_per_source_unless_the_fan_out_would_hold_too_much(media):
    """Decodes is the plan ffmpeg runs: one input per distinct source; a branch far behind gets its own."""
    from renderers.movie.decode import Decodes

    def plan(box: float, late: float) -> list[int]:
        layers = [video(name, "ramp.mp4", w=box, h=box * 9 / 16, startTime=start, duration=1)
                  for name, start in (("a", 0), ("b", late), ("c", 0.1))]
        layers += [{"id": name, "type": "audio", "source": "tone.m4a"} for name in ("s", "s2")]
        scene = validate_and_normalize({"width": 3840, "height": 2160, "fps": FPS, "scenes": [
            {"id": "s", "duration": 30, "layers": layers}]})["scenes"][0]
        paths = {layer["id"]: media / layer["source"] for layer in scene["layers"]}
        return sorted(len(decode.layers) for decode in Decodes(scene, paths, FPS, 2).decodes)

    assert plan(160, 2) == [2, 3]  # ramp.mp4: a, b and c share one decode; tone.m4a: s and s2
    assert plan(1920, 20) == [1, 2, 2]  # b plays 20 s of 1080p frames after a and c: a decode of its own


# --- 3. alpha ----------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("kind", m.ALPHA_FORMATS)
def test_transparent_video_shows_what_is_beneath(kind, tmp_path):
    clip = m.alpha_clip(tmp_path, kind)
    copy = shutil.copy(clip, tmp_path / f"copy-{clip.name}")  # another source: this test is about alpha alone
    scene = {"id": "s", "duration": 2, "bgColor": "#ffffff", "layers": [
        video("plain", clip.name, 0, 0, 320, 180), video("faded", Path(copy).name, 320, 0, 320, 180, startTime=0.5,
                                                        transform={"opacity": 0.5})]}
    frames = m.frames(render(scene, tmp_path, tmp_path / "work"))
    frame = m.at(frames, 1, FPS)
    opaque, clear = (slice(40, 140), slice(20, 140)), (slice(40, 140), slice(180, 300))
    assert np.abs(frame[opaque].mean(axis=(0, 1)) - (255, 0, 0)).max() < 20, frame[opaque].mean(axis=(0, 1))
    assert white(frame, clear), f"{kind}: the clear half shows {frame[clear].mean(axis=(0, 1))}, not white"
    faded_opaque, faded_clear = (slice(40, 140), slice(340, 460)), (slice(40, 140), slice(500, 620))
    assert np.abs(frame[faded_opaque].mean(axis=(0, 1)) - (255, 128, 128)).max() < 20  # opacity composes with alpha
    assert white(frame, faded_clear)
    assert white(m.at(frames, 0.3, FPS), faded_opaque)  # not before its start


@pytest.mark.slow
def test_transparent_png_still_over_video_and_over_colour(media, tmp_path):
    from PIL import Image

    image = Image.new("RGBA", (100, 100), (0, 0, 255, 255))
    image.paste((0, 0, 0, 0), (50, 0, 100, 100))
    image.save(tmp_path / "half.png")
    shutil.copy(media / "ramp.mp4", tmp_path / "ramp.mp4")
    logo = {"type": "image", "source": "half.png", "position": {"x": 100, "y": 100},
            "size": {"width": 100, "height": 100}}
    for layers, path in (([{"id": "l", **logo}], "stills"), ([video("v", "ramp.mp4"), {"id": "l", **logo}], "video")):
        scene = {"id": "s", "duration": 1, "bgColor": "#ffffff", "layers": layers}
        frame = m.at(m.frames(render(scene, tmp_path, tmp_path / path)), 0.5, FPS)
        assert frame[110:190, 105:145, 2].min() > 230 and frame[110:190, 105:145, 0].max() < 30  # blue half
        beneath = m.at(m.frames(render({**scene, "layers": layers[:-1]}, tmp_path, tmp_path / f"{path}-bare")),
                       0.5, FPS)
        assert np.abs(frame[110:190, 155:195].astype(int) - beneath[110:190, 155:195]).max() < 8  # clear half


# --- 4. threads: a scene with many layers stays inside the sandbox's limits ----------------------------------------

class _ThreadPeak:
    """The most threads any ffmpeg child of this process ran at once (polled)."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                try:
                    if child.name() == "ffmpeg":
                        self.peak = max(self.peak, child.num_threads())
                except psutil.Error:
                    pass
            time.sleep(0.005)

    def __enter__(self) -> _ThreadPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
def test_a_hundred_overlays_run_on_a_bounded_number_of_threads(media, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    Image.new("RGBA", (40, 40), (255, 0, 0, 255)).save(tmp_path / "logo.png")
    for name in ("ramp.mp4", "ramp10.mp4", "ramp50.mp4", "short.mp4", "tone.m4a"):
        shutil.copy(media / name, tmp_path / name)
    layers = [video(f"v{i}", ["ramp.mp4", "ramp10.mp4", "ramp50.mp4", "short.mp4"][i % 4], 160 * (i % 4),
                    90 * (i // 4 % 4), 160, 90, startTime=i * 0.1, mute=True) for i in range(20)]
    layers += [{"id": f"logo{i}", "type": "image", "source": "logo.png", "position": {"x": 8 * i, "y": 300},
                "size": {"width": 40, "height": 40}, "startTime": i * 0.02} for i in range(60)]
    layers += [{"id": f"t{i}", "type": "text", "text": f"caption {i}", "fontSize": 14, "zIndex": 1,
                "position": {"x": 16 * i, "y": 8 * i}, "size": {"width": 120, "height": 24}} for i in range(20)]
    scene = {"id": "crowd", "duration": 2, "bgColor": "#ffffff", "layers": layers}
    with _ThreadPeak() as threads:
        out = render(scene, tmp_path, tmp_path / "work", threads=2)
    frames = m.frames(out)
    assert len(frames) == 2 * FPS
    # the last logo (x 472..512, from 1.18 s) is red over white at 1.5 s; the first video plays
    assert np.abs(m.at(frames, 1.5, FPS)[305:335, 490:510].mean(axis=(0, 1)) - (255, 0, 0)).max() < 20
    assert abs(level(m.at(frames, 1, FPS), (slice(62, 86), slice(4, 40))) -
               m.source_level(media / "ramp.mp4", 1, 25)) < 6
    # 100 overlays: one input per source (4 videos) and one atlas page, not one decoder pool per layer
    assert 0 < threads.peak <= 40, threads.peak


# --- through the API: a live server fetches the media over HTTP, renders, and the output is decoded -------------

@pytest.mark.slow
def test_late_reused_and_transparent_layers_through_the_api(make_server, media, tmp_path):
    import httpx

    from tests.integration.test_viralsync_api import submit, wait

    server = make_server({"APPLIANCE_CPU_SLOTS": "2", "APPLIANCE_PRELOAD": "PIL,numpy"})
    server.cli("users", "create", "ada")
    server.h = {"x-api-key": server.new_key("ada", "viralsync")["key"]}
    folder = tmp_path / "served"
    folder.mkdir()
    shutil.copy(media / "ramp.mp4", folder / "ramp.mp4")
    m.alpha_clip(folder, "vp9-webm")
    with m.serve(folder) as base:
        layers = [video("late", f"{base}/ramp.mp4", 0, 0, 320, 180, startTime=2, duration=2),
                  video("again", f"{base}/ramp.mp4", 320, 0, 320, 180, startTime=0, duration=4),
                  video("alpha", f"{base}/alpha_vp9.webm", 0, 180, 320, 180, startTime=1, duration=2, zIndex=1)]
        body = {"kind": "movie", "projectId": "p", "movie": {"width": W, "height": H, "fps": FPS, "scenes": [
            {"id": "s", "duration": 5, "bgColor": "#ffffff", "layers": layers}]}}
        job = wait(server, submit(server, body).json()["jobId"])
    assert job["status"] == "done", job.get("error")
    out = tmp_path / "out.mp4"
    out.write_bytes(httpx.get(job["outputUrl"]).content)
    frames = m.frames(out)
    assert len(frames) == 5 * FPS
    left, right = (slice(40, 140), slice(20, 300)), (slice(40, 140), slice(340, 620))
    ramp = media / "ramp.mp4"
    for t, box, source_time in ((3, left, 1), (3, right, 3), (1, right, 1)):
        assert abs(level(m.at(frames, t, FPS), box) - m.source_level(ramp, source_time, 25)) < 6, (t, box)
    assert white(m.at(frames, 1, FPS), left) and white(m.at(frames, 4.5, FPS), left)
    alpha = m.at(frames, 2, FPS)
    assert np.abs(alpha[220:320, 20:140].mean(axis=(0, 1)) - (255, 0, 0)).max() < 20  # its opaque half
    assert white(alpha, (slice(220, 320), slice(180, 300)))  # its transparent half shows the white beneath
