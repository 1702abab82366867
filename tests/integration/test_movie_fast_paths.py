"""The movie renderer's shortcuts give what the general paths give (issue #24, the seed example's speed goal).

- a bottom video layer covering the whole canvas is the base stream (``layered.base_video``), not an overlay
  onto the bgColor canvas: same pixels as the overlay path, for several opacities and background colours;
- a base video already in the scene's format (yuv420p, BT.709 limited, the canvas size) skips the colour
  conversion: the very same scene file as with the conversion; full-range, BT.601 or other-size sources convert;
- overlays end with ``eof_action=pass`` on streams that last their layers' windows (no full-frame copy per overlay
  per frame), and small ones blend on one thread: the very same scene file as ``repeat`` and the slice-thread
  pool give, with late, short, faded and rotated layers;
- sources are probed in-process with PyAV (``movie.probe``): the same answers as ffprobe and ffmpeg's
  first-frame decode, for every kind of media the conformance documents use;
- a held picture on the stills path is encoded once per half-second block by x264 and the block
  repeated: the joined scene (each distinct block opened once) has the packets of ffmpeg's concat demuxer;
- a silent stills scene is encoded in this process (``stills_x264``, PyAV's libx264): the parameter sets, packet
  timestamps and key frames of ffmpeg's encode, the same pictures, joins a video scene by stream copy;
- scene clips are joined in-process (``mux.concat_scenes``): the same packets and timestamps as ffmpeg's concat
  demuxer with ``-copyts``, and the meta it counts while muxing is what probing the output says;
- the layered path's ffmpeg writes the scene's last frame as a JPEG (the movie's thumbnail) without holding the
  scene's audio back until the last video frame.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import ffmpeg  # ffmpeg-python
import numpy as np
import pytest
from PIL import Image

from renderers import ffmpeg as ff
from renderers.base import NullReporter
from renderers.movie import compose, layered
from renderers.movie.compose import render_scene
from renderers.movie.mux import concat_scenes
from renderers.movie.probe import _info, _pyav_probe, probe_source
from renderers.movie.spec import validate_and_normalize
from tests.media import movie as m

W, H, FPS = 480, 360, 25


@pytest.fixture
def one_x264_thread(monkeypatch) -> None:
    """x264 on one thread, for tests that compare encoded files byte for byte: with its frame threads x264 is not
    repeatable here (the same 480x360 input gave 3 different files in 16 encodes; 1 thread: 16 the same)."""
    real = compose.Canvas.x264
    monkeypatch.setattr(compose.Canvas, "x264", lambda self, params: ":".join(p for p in (real(self, params),
                                                                                          "threads=1") if p))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fast-media")
    m.ffmpeg(folder / "bars.mp4", "-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate={FPS}:d=2", "-c:v", "libx264",
             "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv420p")
    return folder / "bars.mp4"


def _scene_file(clip: Path, workdir: Path, layer: dict, bg: str, duration: float = 2) -> Path:
    scene = {"id": "s", "duration": duration, "bgColor": bg, "layers": [
        {"id": "v", "type": "video", "source": "bars.mp4", "position": {"x": 0, "y": 0},
         "size": {"width": W, "height": H}, "mute": True, **layer},
        {"id": "t", "type": "text", "text": "on top", "position": {"x": 20, "y": 20},
         "size": {"width": 200, "height": 60}, "color": "#ffcc00"}]}
    normalized = validate_and_normalize({"width": W, "height": H, "fps": FPS, "scenes": [scene]})["scenes"][0]
    workdir.mkdir(parents=True)
    shutil.copy(clip, workdir / "bars.mp4")
    render_scene({"scene": normalized, "width": W, "height": H, "fps": FPS, "sources": {"bars.mp4": "bars.mp4"}},
                 workdir, NullReporter())
    return workdir / "scene.mp4"


def _render(clip: Path, workdir: Path, layer: dict, bg: str, duration: float = 2) -> np.ndarray:
    return m.frames(_scene_file(clip, workdir, layer, bg, duration)).astype(int)


@pytest.mark.parametrize(("layer", "bg"), [({}, "#000000"), ({"transform": {"opacity": 0.65}}, "#000000"),
                                           ({"transform": {"opacity": 0.5}, "fit": "fill"}, "#3366cc"),
                                           ({"transform": {"opacity": 0.2}, "fit": "cover"}, "#ffffff")])
def test_a_full_canvas_base_video_looks_as_if_overlaid(clip, tmp_path, monkeypatch, layer, bg):
    calls = []
    real = layered.base_video
    monkeypatch.setattr(layered, "base_video", lambda *a, **k: calls.append(1) or real(*a, **k))
    fast = _render(clip, tmp_path / "fast", layer, bg)
    assert calls, "the full-canvas video did not take the base-stream path"
    monkeypatch.setattr(layered, "covers_canvas", lambda *a, **k: False)
    general = _render(clip, tmp_path / "general", layer, bg)
    assert fast.shape == general.shape == (2 * FPS, H, W, 3)
    # x264 spends its bits a little differently on pictures a level apart, so single pixels of testsrc2's fine
    # detail may differ a lot after encoding; 24x24 block means show the picture itself
    difference = np.abs(_blocks(fast) - _blocks(general))
    assert np.abs(fast - general).mean() < 0.5 and difference.max() < 6, (difference.mean(), difference.max())


def _blocks(frames: np.ndarray, side: int = 24) -> np.ndarray:
    count, height, width, _ = frames.shape
    return frames.reshape(count, height // side, side, width // side, side, 3).mean(axis=(2, 4))


def test_a_video_that_does_not_cover_the_scene_is_overlaid(clip, tmp_path, monkeypatch):
    """Late, smaller, faded or rotated: the bgColor must show around it, so it stays an overlay."""
    monkeypatch.setattr(layered, "base_video", lambda *a, **k: pytest.fail("took the base-stream path"))
    frames = _render(clip, tmp_path / "late", {"startTime": 1, "duration": 1}, "#ffffff")
    assert frames[FPS // 2, 100:].min() > 245  # before the layer starts: the white background (below the text)
    _render(clip, tmp_path / "faded", {"fadeIn": 0.5}, "#ffffff")
    _render(clip, tmp_path / "rotated", {"transform": {"rotation": 10}}, "#ffffff")
    _render(clip, tmp_path / "smaller", {"size": {"width": W - 2, "height": H}, "fit": "fill"}, "#ffffff")
    wide = _render(clip, tmp_path / "contained", {"size": {"width": W, "height": H // 2}, "position": {
        "x": 0, "y": H // 4}}, "#ffffff")  # contain: the source's aspect differs, white bars beside it
    assert wide[FPS, H // 2, :W // 8].min() > 245


def test_overlays_passing_at_their_end_give_the_same_scene(clip, tmp_path, monkeypatch, one_x264_thread):
    from PIL import Image

    Image.new("RGBA", (64, 48), (255, 0, 0, 128)).save(tmp_path / "badge.png")
    box = {"position": {"x": 40, "y": 30}, "size": {"width": 200, "height": 150}}
    scene = {"id": "s", "duration": 3, "bgColor": "#203040", "layers": [
        {"id": "late", "type": "video", "source": "bars.mp4", "startTime": 0.5, "duration": 2.5, "mute": True,
         **box},  # the clip is 2 s long: it holds its last frame for the last half second
        {"id": "faded", "type": "video", "source": "bars.mp4", "startTime": 0, "duration": 2, "mute": True,
         "fadeIn": 0.5, "transform": {"opacity": 0.5, "rotation": 10}, "zIndex": 1,
         "position": {"x": 200, "y": 150}, "size": {"width": 160, "height": 120}},
        {"id": "badge", "type": "image", "source": "badge.png", "startTime": 1, "duration": 1.2, "zIndex": 2,
         "position": {"x": 101, "y": 77}, "size": {"width": 64, "height": 48}},
        {"id": "title", "type": "text", "text": "in and out", "startTime": 0.2, "duration": 2, "fadeOut": 0.4,
         "zIndex": 3, "position": {"x": 20, "y": 280}, "size": {"width": 300, "height": 60}, "color": "#ffcc00"},
        {"id": "cta", "type": "text", "text": "always", "startTime": 0, "duration": 3, "zIndex": 4,
         "position": {"x": 300, "y": 20}, "size": {"width": 160, "height": 50}}]}
    normalized = validate_and_normalize({"width": W, "height": H, "fps": FPS, "scenes": [scene]})["scenes"][0]
    files = {}
    for eof, small in (("pass", layered.SMALL_OVERLAY), ("repeat", layered.SMALL_OVERLAY), ("threaded", 10**9)):
        monkeypatch.setattr(layered, "OVERLAY_EOF", "pass" if eof == "threaded" else eof)
        monkeypatch.setattr(layered, "SMALL_OVERLAY", small)  # 10**9: every overlay on the slice-thread pool
        workdir = tmp_path / eof
        workdir.mkdir()
        shutil.copy(clip, workdir / "bars.mp4")
        shutil.copy(tmp_path / "badge.png", workdir / "badge.png")
        render_scene({"scene": normalized, "width": W, "height": H, "fps": FPS,
                      "sources": {"bars.mp4": "bars.mp4", "badge.png": "badge.png"}}, workdir, NullReporter())
        files[eof] = workdir / "scene.mp4"
    assert files["pass"].read_bytes() == files["repeat"].read_bytes() == files["threaded"].read_bytes()
    frames = m.frames(files["pass"]).astype(int)
    assert len(frames) == 3 * FPS
    assert np.abs(frames[int(2.8 * FPS), 40:170, 50:230] - frames[int(2.6 * FPS), 40:170, 50:230]).mean() < 2
    assert np.abs(frames[int(2.2 * FPS), 40:170, 50:230] - frames[int(1.8 * FPS), 40:170, 50:230]).mean() > 5


def _bt709_clip(folder: Path, name: str, *args: str) -> Path:
    return m.ffmpeg(folder / name, "-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate={FPS}:d=2", "-c:v", "libx264",
                    "-preset", "ultrafast", "-colorspace", "bt709", *args)


@pytest.mark.parametrize("opacity", [1, 0.65])
def test_a_base_video_in_the_scenes_format_is_not_converted_and_looks_the_same(tmp_path, monkeypatch, opacity,
                                                                               one_x264_thread):
    clip = _bt709_clip(tmp_path, "bt709.mp4", "-pix_fmt", "yuv420p")
    assert layered.needs_no_conversion(probe_source(clip), W, H)
    graphs = []
    real = ff.run_with_progress
    monkeypatch.setattr(ff, "run_with_progress", lambda stream, *a: graphs.append(" ".join(
        ffmpeg.compile(stream))) or real(stream, *a))
    layer = {"transform": {"opacity": opacity}}
    fast = _scene_file(clip, tmp_path / "fast", layer, "#000000")
    assert "in_color_matrix" not in graphs[-1] and "scale=h=360:w=480" in graphs[-1]
    monkeypatch.setattr(layered, "needs_no_conversion", lambda *a: False)
    converted = _scene_file(clip, tmp_path / "converted", layer, "#000000")
    assert "in_color_matrix=bt709" in graphs[-1]
    assert fast.read_bytes() == converted.read_bytes()  # the conversion was a copy: the very same file


def test_sources_that_need_a_conversion_get_one(tmp_path):
    full_range = probe_source(_bt709_clip(tmp_path, "full.mp4", "-pix_fmt", "yuvj420p"))
    assert full_range.pix_fmt == "yuvj420p" or not full_range.limited
    assert not layered.needs_no_conversion(full_range, W, H)
    untagged_sd = probe_source(m.ffmpeg(tmp_path / "sd.mp4", "-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:d=1",
                                        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"))
    assert untagged_sd.matrix == "bt601" and not layered.needs_no_conversion(untagged_sd, W, H)
    four_four_four = probe_source(_bt709_clip(tmp_path, "444.mp4", "-pix_fmt", "yuv444p"))
    assert not layered.needs_no_conversion(four_four_four, W, H)
    exact = probe_source(_bt709_clip(tmp_path, "exact.mp4", "-pix_fmt", "yuv420p"))
    assert layered.needs_no_conversion(exact, W, H) and not layered.needs_no_conversion(exact, W, H + 2)


def _no_in_process_encode(*args, **kwargs) -> None:
    raise ff.FfmpegError(["pyav-libx264"], "refused by the test")


@pytest.mark.parametrize("in_process", [True, False])
def test_a_held_picture_is_encoded_once_per_block_and_repeated(tmp_path, monkeypatch, in_process):
    """In this process (``stills_x264``: a silent scene), or by ffmpeg's segment muxer when that fails."""
    scene = {"id": "s", "duration": 3, "bgColor": "#0f172a", "layers": [
        {"id": "t", "type": "text", "text": "held", "position": {"x": 20, "y": 20},
         "size": {"width": 200, "height": 60}, "color": "#00d4ff"}]}
    normalized = validate_and_normalize({"width": W, "height": H, "fps": FPS, "scenes": [scene]})["scenes"][0]
    graphs = []
    real = ff.run_with_progress
    monkeypatch.setattr(ff, "run_with_progress", lambda stream, *a: graphs.append(" ".join(
        ffmpeg.compile(stream))) or real(stream, *a))
    monkeypatch.setattr(compose.shutil, "rmtree", lambda *a, **k: None)  # keep the blocks for the reference join
    if not in_process:
        monkeypatch.setattr(compose, "encode_silent_blocks", _no_in_process_encode)
    render_scene({"scene": normalized, "width": W, "height": H, "fps": FPS, "sources": {}}, tmp_path, NullReporter())
    assert (graphs == []) if in_process else (len(graphs) == 1 and "-segment_frames 12 " in graphs[0])
    ours = tmp_path / "scene.mp4"
    packets = [packet for packet in _packets(ours) if packet[0] == "video"]
    assert len(packets) == 3 * FPS
    assert [index for index, packet in enumerate(packets) if packet[3]] == list(range(0, 3 * FPS, 12))
    frames = m.frames(ours)
    assert len(frames) == 3 * FPS and np.abs(frames.astype(int) - frames[0]).mean() < 0.5  # one picture, coded twice
    blocks = tmp_path / "scene_tmp"
    listing = tmp_path / "blocks.txt"  # the playlist: block 0 six times (72 frames), then block 1 (3 frames)
    listing.write_text("".join(f"file '{blocks / name}'\n" for name in ["block_000.mp4"] * 6 + ["block_001.mp4"]))
    subprocess.run(["ffmpeg", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing), "-i",
                    str(blocks / "audio.m4a"), "-map", "0:v", "-map", "1:a", "-c", "copy", str(tmp_path / "ref.mp4")],
                   check=True)
    reference = [packet for packet in _packets(tmp_path / "ref.mp4") if packet[0] == "video"]
    assert [packet[1:] for packet in packets] == [packet[1:] for packet in reference]


def test_pyav_probe_answers_as_ffprobe_does(tmp_path):
    from tests.media import movie_docs

    movie_docs.make_media(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 100)
    (tmp_path / "text.mp4").write_text("not a video")
    read_in_process = 0
    for path in sorted(p for p in tmp_path.iterdir() if p.is_file()):
        streams = ff.media_streams(path)
        has_video = any(stream.get("codec_type") == "video" for stream in streams)
        expected = _info(streams, has_video and ff.decodes_first_frame(path), False)
        got = probe_source(path)
        assert (got.has_video, got.channels, got.matrix, got.decoder, got.decodes) == (
            expected.has_video, expected.channels, expected.matrix, expected.decoder, expected.decodes), path.name
        read_in_process += _pyav_probe(path) is not None
    assert read_in_process >= 20  # PyAV answered for most files, the CLI only for the rest


def _packets(path: Path) -> list[tuple]:
    import av

    with av.open(str(path)) as container:
        return [(packet.stream.type, packet.pts, packet.dts, packet.is_keyframe) for packet in container.demux()
                if packet.dts is not None]


def test_scenes_join_with_the_timestamps_of_ffmpegs_concat(clip, tmp_path):
    first = _render(clip, tmp_path / "a", {"transform": {"opacity": 0.5}}, "#000000", duration=1.2)
    assert len(first) == 30
    second = tmp_path / "b"
    _render(clip, second, {"startTime": 0.5, "duration": 1}, "#102030", duration=1.6)
    files = [tmp_path / "a" / "scene.mp4", second / "scene.mp4"]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"file '{path}'\n" for path in files))
    subprocess.run(["ffmpeg", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
                    "-copyts", "-movflags", "+faststart", str(tmp_path / "reference.mp4")], check=True)
    meta = concat_scenes(files, tmp_path / "ours.mp4")
    assert _packets(tmp_path / "ours.mp4") == _packets(tmp_path / "reference.mp4")
    assert meta == ff.video_meta(tmp_path / "ours.mp4") == ff.video_meta(tmp_path / "reference.mp4")
    assert len(m.frames(tmp_path / "ours.mp4")) == 70


def test_the_last_frame_jpeg_does_not_hold_the_audio_back(clip, tmp_path):
    """ffmpeg 5.1 feeds first the output that has had no frame yet. When the JPEG's branch let only the last frame
    through, the scene's whole audio (decode, mix, AAC) waited until after the last video frame, on one core while
    x264 waited for its flush; in a scene longer than the muxer's 10 s interleave window the audio was then written
    seconds after its video (2.4 s in this 14 s scene). Now the audio goes along with the video, in ffmpeg and in
    the file, and the JPEG is still the scene's last frame."""
    import av

    workdir = tmp_path / "long"
    workdir.mkdir()
    shutil.copy(clip, workdir / "bars.mp4")
    m.tone(workdir / "tone.m4a", seconds=3)
    layers = [
        {"id": "v", "type": "video", "source": "bars.mp4", "loop": True, "mute": True, "position": {"x": 0, "y": 0},
         "size": {"width": W, "height": H}},
        {"id": "a", "type": "audio", "source": "tone.m4a", "loop": True}]
    scene = validate_and_normalize({"width": W, "height": H, "fps": 10,
                                    "scenes": [{"id": "s", "duration": 14, "layers": layers}]})["scenes"][0]
    result = render_scene({"scene": scene, "width": W, "height": H, "fps": 10,
                           "sources": {"bars.mp4": "bars.mp4", "tone.m4a": "tone.m4a"}}, workdir, NullReporter())
    assert result["files"]["thumbnail"] == compose.LAST_FRAME_FILE
    with av.open(str(workdir / "scene.mp4")) as container:
        packets = sorted((packet.pos, packet.stream.type, float(packet.pts * packet.time_base))
                         for packet in container.demux() if packet.pts is not None)
    video_so_far, lead = 0.0, 0.0
    for _, kind, seconds in packets:  # in file order: how far the video is ahead of each audio packet
        if kind == "video":
            video_so_far = max(video_so_far, seconds)
        else:
            lead = max(lead, video_so_far - seconds)
    assert {kind for _, kind, _ in packets} == {"video", "audio"} and lead < 1, lead
    frames = m.frames(workdir / "scene.mp4").astype(int)
    jpeg = np.asarray(Image.open(workdir / compose.LAST_FRAME_FILE).convert("RGB"), dtype=int)
    distances = [np.abs(jpeg - frame).mean() for frame in frames]
    assert len(frames) == 140 and int(np.argmin(distances)) == 139, distances  # the last one, not the first


def test_a_silent_stills_scene_is_encoded_in_process_as_ffmpeg_encodes_it(clip, tmp_path, monkeypatch):
    """No ffmpeg process for a stills scene without sound: what PyAV's libx264 writes must be what ffmpeg's wrote,
    so that it joins scenes encoded by ffmpeg by stream copy, plays the same, and sounds the same (silence)."""
    layers = [{"id": "t", "type": "text", "text": "held, then fading", "position": {"x": 20, "y": 20},
               "size": {"width": 300, "height": 60}, "color": "#00d4ff", "fadeOut": 0.4},
              {"id": "b", "type": "text", "text": "late", "startTime": 1, "position": {"x": 40, "y": 200},
               "size": {"width": 200, "height": 60}, "color": "#ffffff", "fadeIn": 0.3}]
    scene = validate_and_normalize({"width": W, "height": H, "fps": FPS, "scenes": [
        {"id": "s", "duration": 2.4, "bgColor": "#3366cc", "layers": layers}]})["scenes"][0]
    graphs: list[str] = []
    real = ff.run_with_progress
    monkeypatch.setattr(ff, "run_with_progress", lambda stream, *a: graphs.append(" ".join(
        ffmpeg.compile(stream))) or real(stream, *a))
    files = {}
    for label in ("ours", "ffmpeg"):
        if label == "ffmpeg":
            monkeypatch.setattr(compose, "encode_silent_blocks", _no_in_process_encode)
        (tmp_path / label).mkdir()
        render_scene({"scene": scene, "width": W, "height": H, "fps": FPS, "sources": {}}, tmp_path / label,
                     NullReporter())
        files[label] = tmp_path / label / "scene.mp4"
        assert len(graphs) == (0 if label == "ours" else 1), graphs
    ours, theirs = (_stream_facts(files[label]) for label in ("ours", "ffmpeg"))
    assert ours == theirs  # SPS/PPS, time bases, frame and sample counts, every packet's timestamps and key flag
    pictures = [m.frames(files[label]).astype(int) for label in ("ours", "ffmpeg")]
    assert pictures[0].shape == pictures[1].shape == (60, H, W, 3)
    assert np.abs(pictures[0] - pictures[1]).mean() < 0.5  # the same pictures, but for x264's rounding
    assert m.rms_db(files["ours"], 0, 2.4) < -90  # silence
    video_scene = _scene_file(clip, tmp_path / "video", {}, "#000000", duration=1)
    meta = concat_scenes([video_scene, files["ours"]], tmp_path / "movie.mp4")  # raises if the SPS/PPS differ
    assert meta["frames"] == 25 + 60 and len(m.frames(tmp_path / "movie.mp4")) == 85


def _stream_facts(path: Path) -> list:
    import av

    with av.open(str(path)) as container:
        streams = [(s.type, bytes(s.codec_context.extradata or b""), s.time_base, s.frames) for s in container.streams]
        return [streams, _packets(path)]
