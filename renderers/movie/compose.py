"""``render_scene``: one movie scene → ``scene.mp4`` (H.264 yuv420p, constant fps, AAC 48 kHz stereo).

Two paths:
- no video layers ("stills"): the picture only changes where a layer appears, disappears or fades, so each
  distinct picture is composited ONCE with Pillow and ffmpeg holds it for its frames (``setpts`` + ``fps``).
  A picture held for two blocks (half a second each) or more is encoded for one block only and that clip is
  repeated by stream copy (in-process, ``mux.join_blocks``), so x264 never sees most of the identical frames.
  Without sound the blocks are encoded in this process (``stills_x264``, PyAV's libx264), not by ffmpeg;
- with video layers ("layered", ``layered.py``): one filter graph on a ``color`` background; text/image layers are
  Pillow sprites (atlas pages, decoded once) and video layers are branches of one decode per source
  (``decode.py``), each overlaid while the scene clock is inside its window.
Every clip has the same codec settings and an audio track (silence if need be), so clips concat with ``-c copy``.
"""
from __future__ import annotations

import functools
import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg  # ffmpeg-python
from PIL import Image

from renderers import encoder as enc
from renderers import ffmpeg as ff
from renderers.base import RenderError, Reporter
from renderers.movie.decode import Decodes, cpu_budget
from renderers.movie.feed import PictureFeed
from renderers.movie.hugepages import no_huge_pages
from renderers.movie.layered import layered_video
from renderers.movie.layers import AUDIO_RATE, Sprite, audio_chain, draw_order, make_sprite, to_yuv, window
from renderers.movie.mux import join_blocks
from renderers.movie.spec import SpecError, normalize_scene
from renderers.movie.stills_x264 import encode_silent_blocks
from renderers.preview import Preview

X264_PRESET = "veryfast"
SCENE_FILE = "scene.mp4"
LAST_FRAME_FILE = "last.jpg"  # the scene's last frame, for the movie's thumbnail (assemble.py) without a decode
# x264 analysis settings for pictures that do not move: no lookahead, no scene cuts, plain diamond search. Its
# threads stay the task's budget: one thread saved ~0.2 CPU-s in the seed's full example (two scenes at once), but
# a stills scene rendered alone took a third longer (text+image 6 s scene 0.31 -> 0.41 of the floor, BENCHMARKS.md).
# None of them changes the SPS/PPS, so these clips still concat with the others (preset stays X264_PRESET).
STILL_X264_PARAMS = "rc-lookahead=0:mbtree=0:me=dia:scenecut=0:b-adapt=0"
# A picture held for >= 2 blocks is encoded for one block, then repeated (one IDR per block). Half a second: the
# x264 frames of a held picture are what a stills scene costs, and an IDR of a still picture is small (~15 KB at
# 1080p for a title on a plain background), so twice the IDRs cost less than 15 more frames through x264.
BLOCK_SECONDS = 0.5
# x264 gives its lookahead (frame-type decisions, mbtree) one thread below 6 encoder threads, i.e. below 4 cores
# (it starts 1.5 threads per core), and on 2 or 3 cores that one thread is what the encoder waits for. Two there, as
# x264 itself chooses on 4 cores: the seed's video scene 2.155 -> 2.085 s (medians of 6 interleaved runs of its
# ffmpeg command, 2 cores; session 9: 2.62 -> 2.54 s), same SSIM/PSNR, 0.2 % more bytes. The SPS/PPS do not
# change: the clips still concat.
LOOKAHEAD_PARAMS = "lookahead-threads=2"
_TMP_DIR = "scene_tmp"
BLOCK_AUDIO = "audio.m4a"  # the stills path's audio, encoded beside its blocks
_PREPARE_SHARE = 0.1  # of the progress bar, for drawing sprites before ffmpeg starts

Part = tuple[tuple, int]  # (picture key, frame count); a key lists (sprite index, alpha 0..255) bottom to top


@dataclass(frozen=True)
class Canvas:
    width: int
    height: int
    fps: int
    frames: int
    bg: str
    # Threads for every ffmpeg thread pool of this scene (decoders, filter graph, x264); 0 = ffmpeg's own choice,
    # i.e. all cores. The scheduler sets it (``threads`` in the task input) when scene tasks share the cores.
    threads: int = 0

    def x264(self, params: str) -> str:
        """x264-params with the thread budget, unless ``params`` sets its own thread count."""
        budget = f"threads={self.threads}" if self.threads and "threads=" not in params else ""
        return ":".join(p for p in (params, budget) if p)

    def threaded(self, stream):
        """An output node with the filter graph's thread pool sized to the budget (decoders: ``decode.Decodes``)."""
        if not self.threads:
            return stream
        return stream.global_args("-filter_complex_threads", str(self.threads), "-filter_threads", str(self.threads))

    @property
    def duration(self) -> float:
        return self.frames / self.fps


def render_scene(task_input: dict, workdir: Path, report: Reporter) -> dict:
    workdir = Path(workdir)
    canvas, scene = _read_input(task_input)
    sources = _source_paths(scene, task_input.get("sources") or {}, workdir)
    tmp = workdir / _TMP_DIR
    tmp.mkdir(exist_ok=True)
    part = workdir / "scene.part.mp4"
    (workdir / LAST_FRAME_FILE).unlink(missing_ok=True)  # an earlier attempt's, in a reused workdir
    report.progress(0.0, "rendering")
    try:
        last_frame = _render(scene, canvas, sources, tmp, part, report, workdir / LAST_FRAME_FILE)
    except ff.FfmpegError as exc:
        report.log(str(exc))
        raise RenderError(f"scene '{scene['id']}': ffmpeg failed: {_reason(exc)}") from None
    part.replace(workdir / SCENE_FILE)
    shutil.rmtree(tmp, ignore_errors=True)
    report.progress(1.0, "rendering")
    meta = {"duration": round(canvas.duration, 6), "frames": canvas.frames, "width": canvas.width,
            "height": canvas.height, "threads": canvas.threads, **ff.encoder_meta()}
    files = {"scene": SCENE_FILE}
    if last_frame is not None:  # the stills path's last picture, at hand
        last_frame.save(workdir / LAST_FRAME_FILE, "JPEG", quality=90)
    if (workdir / LAST_FRAME_FILE).is_file() and (workdir / LAST_FRAME_FILE).stat().st_size:
        files["thumbnail"] = LAST_FRAME_FILE
    return {"files": files, "meta": meta}


def _read_input(task_input: dict) -> tuple[Canvas, dict]:
    try:
        width, height, fps = int(task_input["width"]), int(task_input["height"]), int(task_input["fps"])
        scene = normalize_scene(task_input["scene"], 0, width, height, fps)
    except KeyError as exc:
        raise RenderError(f"task input lacks {exc.args[0]!r}") from None
    except SpecError as exc:
        raise RenderError(f"invalid scene: {exc}") from None
    frames = round(scene["duration"] * fps)
    threads = task_input.get("threads") or 0
    if type(threads) is not int or not 0 <= threads <= 256:
        raise RenderError("task input 'threads' must be an integer 0-256")
    return Canvas(width, height, fps, frames, scene["bgColor"], threads), scene


def _source_paths(scene: dict, names: dict, workdir: Path) -> dict[str, Path]:
    """Map each layer id to its downloaded file, which must lie inside the workdir."""
    root, paths = workdir.resolve(), {}
    for layer in scene["layers"]:
        if "source" not in layer:
            continue
        name = names.get(layer["source"])
        path = (root / name).resolve() if isinstance(name, str) else None
        if path is None or not path.is_relative_to(root) or not path.is_file():
            raise RenderError(f"layer '{layer['id']}': source {layer['source']!r} was not provided")
        paths[layer["id"]] = path
    return paths


def _reason(exc: ff.FfmpegError) -> str:
    lines = [line.strip() for line in exc.stderr.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Conversion failed")]
    return (useful or lines or ["unknown error"])[-1][:300]


def _render(scene: dict, canvas: Canvas, sources: dict[str, Path], tmp: Path, out: Path,
            report: Reporter, last_jpeg: Path) -> Image.Image | None:
    """Renders the scene into out; returns its last frame when it is already at hand (stills path), else the
    layered path's ffmpeg writes it to ``last_jpeg``."""
    decodes = Decodes(scene, sources, canvas.fps, canvas.threads, tmp)  # one decode per media source, fanned out
    audio = _audio_mix(scene, decodes, canvas)
    if any(layer["type"] == "video" for layer in scene["layers"]):
        video = layered_video(scene, canvas.width, canvas.height, canvas.fps, canvas.frames, sources, decodes, tmp,
                              canvas.threads)
        lookahead = LOOKAHEAD_PARAMS if 2 <= cpu_budget(canvas.threads) <= 3 else ""
        with no_huge_pages():  # x264's huge pages cost more to zero than they save here: see hugepages.py
            _encode(video, audio, canvas, out, tmp, _progress(report, _PREPARE_SHARE, 1.0), lookahead,
                    last_jpeg=last_jpeg)
        return None
    silent = not any(decodes.audio(layer) is not None for layer in scene["layers"])
    return _render_stills(scene, canvas, sources, audio, tmp, out, report, silent)


def _progress(report: Reporter, low: float, high: float):
    report.progress(low, "rendering")
    return lambda fraction: report.progress(low + (high - low) * fraction, "rendering")


def _encode(video, audio, canvas: Canvas, out: Path, tmp: Path, on_progress, x264_params: str = "",
            feed: PictureFeed | None = None, last_jpeg: Path | None = None) -> None:
    """Encode the scene; with ``last_jpeg``, the same ffmpeg also writes the scene's last frame there as a JPEG
    (a branch that drops every frame but that one): the movie's thumbnail when this is its last scene, which the
    assemble task otherwise had to decode from the finished movie (~0.4 s at 1080p after a 6 s video scene)."""
    video = video.filter("trim", end_frame=canvas.frames)
    still = None
    if last_jpeg is not None:
        branches = video.filter_multi_output("split", 2)
        video = branches.stream(0)
        still = ffmpeg.output(_last_frame_branch(branches.stream(1), canvas), str(last_jpeg),
                              fps_mode="passthrough", update=1, **{"q:v": 3})
    def build(encoder: str):  # h264_nvenc when this task holds an NVENC session; libx264 if that fails
        if feed is not None:
            feed.start()  # the pictures for this run of ffmpeg
        scene = ff.h264_aac_output(video, audio, out, fps=canvas.fps, preset=X264_PRESET,
                                   x264_params=canvas.x264(x264_params), encoder=encoder)
        return canvas.threaded(scene if still is None else ffmpeg.merge_outputs(scene, still))
    try:
        ff.encode_with_fallback(build, canvas.duration, on_progress, tmp / "ffmpeg.log")
    finally:
        if feed is not None:
            feed.stop()


def _last_frame_branch(stream, canvas: Canvas):
    """The frames for the last-frame JPEG: the first one too, stamped just before the last, each overwriting the
    file (the output's ``update``), so the last one stays.

    Why the first: ffmpeg 5.1 works for whichever output has the oldest timestamp, and an output that has had no
    frame yet counts as the oldest. A branch that let only the last frame through kept the audio waiting: the whole
    scene's audio (the mp3 decode, the mix, AAC) ran after the last video frame, ffmpeg's main thread alone while
    x264 waited for its flush, and a scene longer than the muxer's 10 s interleave window had its audio written
    after the video. Stamped late, the first frame puts this output at the back of the queue; ``passthrough`` keeps
    ffmpeg from filling the gap before that stamp with copies (a JPEG encode each). The seed's video scene:
    2.50 -> 2.43 s (medians of 8 interleaved runs of its ffmpeg command), one more 1080p JPEG encode."""
    last = canvas.frames - 1
    if last < 1:
        return stream.filter("select", "eq(n,0)")
    return stream.filter("select", f"eq(n,0)+eq(n,{last})").filter("setpts", f"({last - 1}+N)/({canvas.fps}*TB)")


# --- audio -------------------------------------------------------------------------------------------------

def _audio_mix(scene: dict, decodes: Decodes, canvas: Canvas):
    """Silence of exactly the scene's length, with every audible layer mixed in at its own level."""
    silence = ffmpeg.input(f"anullsrc=r={AUDIO_RATE}:cl=stereo", f="lavfi", t=canvas.duration).audio
    voices = [audio_chain(sound, layer, window(layer, canvas.fps, canvas.frames), decodes.info(layer).channels)
              for layer in scene["layers"] if layer["type"] in ("video", "audio")
              and (sound := decodes.audio(layer)) is not None]
    mixed = silence
    if voices:  # normalize=0: layers keep their own volume instead of being divided by the input count
        mixed = ffmpeg.filter([silence, *voices], "amix", inputs=len(voices) + 1, duration="first", normalize=0)
    return mixed.filter("atrim", end_sample=round(canvas.duration * AUDIO_RATE))


# --- the "stills" path: no video layers -----------------------------------------------------------------------

def _change_frames(sprites: list[Sprite], canvas: Canvas) -> list[int]:
    """Frames where the picture may change: layer starts and ends, and every frame of a fade."""
    frames = {0}
    for sprite in sprites:
        win = sprite.window
        frames.update((win.first, win.end))
        frames.update(range(win.first, min(win.end, win.first + int(win.fade_in * canvas.fps) + 2)))
        frames.update(range(max(win.first, win.end - int(win.fade_out * canvas.fps) - 2), win.end))
    return sorted(frame for frame in frames if frame < canvas.frames)


def still_parts(sprites: list[Sprite], canvas: Canvas) -> list[Part]:
    """The scene as runs of identical frames: (picture key, frame count), in order."""
    runs: list[tuple[int, tuple]] = []
    for frame in _change_frames(sprites, canvas):
        key = tuple((index, level) for index, sprite in enumerate(sprites)
                    if (level := round(255 * sprite.window.alpha(frame, canvas.fps))) > 0)
        if not runs or runs[-1][1] != key:
            runs.append((frame, key))
    ends = [first for first, _ in runs[1:]] + [canvas.frames]
    return [(key, end - first) for (first, key), end in zip(runs, ends, strict=True)]


def plan_blocks(parts: list[Part], block: int) -> tuple[list[list[Part]], list[int]]:
    """Split the parts into clips to encode once each, and the playlist of clip indices.

    A picture held for at least two ``block`` lengths becomes one ``block``-frame clip that the playlist
    repeats (stream copy: x264 never sees the repeats); everything else is encoded as it comes.
    """
    blocks: list[list[Part]] = []
    playlist: list[int] = []
    pending: list[Part] = []
    for picture, count in parts:
        if count < 2 * block:
            pending.append((picture, count))
            continue
        if pending:
            blocks.append(pending)
            playlist.append(len(blocks) - 1)
        blocks.append([(picture, block)])
        playlist.extend([len(blocks) - 1] * (count // block))
        pending = [(picture, count % block)] if count % block else []
    if pending:
        blocks.append(pending)
        playlist.append(len(blocks) - 1)
    return blocks, playlist


class _Pictures:
    """Composites the canvas for a picture key with Pillow, keeping only the last few (6 MB each at 1080p)."""

    def __init__(self, sprites: list[Sprite], canvas: Canvas) -> None:
        self.sprites, self.canvas = sprites, canvas
        self.rgb = functools.lru_cache(maxsize=4)(self._composite)
        self.preview: Preview | None = None

    def _composite(self, key: tuple) -> bytes:
        image = Image.new("RGB", (self.canvas.width, self.canvas.height), self.canvas.bg)
        for index, level in key:
            sprite = self.sprites[index]
            image.paste(sprite.rgb, (sprite.x, sprite.y), sprite.faded_mask(level))
        if self.preview is not None:  # the dashboard's live frame: at most once a second, shrunk to 320 px
            self.preview.offer(lambda: image)
        return image.tobytes()


def _parts_video(parts: list[Part], pictures: _Pictures, path: Path) -> tuple[Any, PictureFeed]:
    """Frames for consecutive parts: each part's picture sent once (raw RGB, through the FIFO ``path`` that the
    returned feed writes while ffmpeg runs); ffmpeg holds it for its frames."""
    # input frame N is output frame N plus the extra frames of every longer part before it
    delays = [f"{count - 1}*gt(N,{index})" for index, (_, count) in enumerate(parts) if count > 1]
    # ... and a closing copy of the last picture, so that ``fps`` emits the last part in full
    feed = PictureFeed(path, lambda: (pictures.rgb(picture) for picture, _ in [*parts, parts[-1]]))
    canvas = pictures.canvas
    video = ffmpeg.input(str(path), f="rawvideo", pix_fmt="rgb24", s=f"{canvas.width}x{canvas.height}",
                         framerate=canvas.fps)
    # The time base is 1/fps, so a PTS is a frame number; ``fps`` then repeats each picture until the next.
    video = to_yuv(video).filter("setpts", "+".join(["N", *delays])).filter("fps", fps=canvas.fps)
    return video.filter("trim", end_frame=sum(count for _, count in parts)).filter("setsar", "1"), feed


def _encode_blocks(blocks: list[list[Part]], pictures: _Pictures, audio, tmp: Path, on_progress) -> None:
    """Encode all blocks in one x264 pass, cut into ``block_NNN.mp4`` at the block boundaries; the same ffmpeg
    process encodes the scene's audio into ``audio.m4a`` (one process start, not two)."""
    lengths = [sum(count for _, count in block) for block in blocks]
    video, feed = _parts_video([part for block in blocks for part in block], pictures, tmp / "pictures.rgb")
    canvas = pictures.canvas
    sound = ffmpeg.output(audio, str(tmp / BLOCK_AUDIO), **ff.SCENE_AUDIO)  # the codec settings of every clip
    def build(encoder: str):  # h264_nvenc when this task holds an NVENC session; libx264 if that fails
        feed.start()  # the pictures for this run of ffmpeg
        return canvas.threaded(ffmpeg.merge_outputs(ff.h264_segments_output(
            video, tmp / "block_%03d.mp4", fps=canvas.fps, preset=X264_PRESET,
            x264_params=canvas.x264(STILL_X264_PARAMS), split_frames=list(itertools.accumulate(lengths))[:-1],
            encoder=encoder), sound))
    try:
        ff.encode_with_fallback(build, sum(lengths) / canvas.fps, on_progress, tmp / "blocks.log")
    finally:
        feed.stop()


def _render_stills(scene: dict, canvas: Canvas, sources: dict[str, Path], audio, tmp: Path, out: Path,
                   report: Reporter, silent: bool) -> Image.Image:
    """``silent``: no layer makes a sound, so the audio is silence and nothing needs ffmpeg's filters: the blocks
    are encoded in this process (``stills_x264``), with ffmpeg as the fallback."""
    sprites = [make_sprite(layer, sources.get(layer["id"]), window(layer, canvas.fps, canvas.frames))
               for layer in draw_order(scene["layers"])]
    pictures = _Pictures(sprites, canvas)
    pictures.preview = Preview(out.parent)  # out is in the workdir (renderers/preview.py)
    parts = still_parts(sprites, canvas)
    blocks, playlist = plan_blocks(parts, max(1, round(canvas.fps * BLOCK_SECONDS)))
    if silent and enc.preferred() == enc.X264 and _encode_in_process(blocks, pictures, tmp, report):
        _join(blocks, playlist, canvas, tmp, out)
    elif len(playlist) == 1:  # nothing repeats: one pass, straight into the scene file
        video, feed = _parts_video(blocks[0], pictures, tmp / "pictures.rgb")
        _encode(video, audio, canvas, out, tmp, _progress(report, _PREPARE_SHARE, 1.0), STILL_X264_PARAMS, feed)
    else:
        _encode_blocks(blocks, pictures, audio, tmp, _progress(report, _PREPARE_SHARE, 0.95))
        _join(blocks, playlist, canvas, tmp, out)
    return Image.frombytes("RGB", (canvas.width, canvas.height), pictures.rgb(parts[-1][0]))  # sent last: cached


def _encode_in_process(blocks: list[list[Part]], pictures: _Pictures, tmp: Path, report: Reporter) -> bool:
    """The blocks and their silence encoded by ``stills_x264``; False (logged) when that failed, e.g. out of the
    task's address space, and the caller encodes them with ffmpeg."""
    canvas = pictures.canvas
    try:
        encode_silent_blocks(blocks, pictures.rgb, (canvas.width, canvas.height), canvas.fps, preset=X264_PRESET,
                             x264_params=canvas.x264(STILL_X264_PARAMS), tmp=tmp, audio=tmp / BLOCK_AUDIO,
                             seconds=canvas.duration, on_progress=_progress(report, _PREPARE_SHARE, 0.95))
    except ff.FfmpegError as exc:
        report.log(f"in-process x264 failed, encoding with ffmpeg: {str(exc).splitlines()[-1][:300]}")
        return False
    return True


def _join(blocks: list[list[Part]], playlist: list[int], canvas: Canvas, tmp: Path, out: Path) -> None:
    lengths = [sum(count for _, count in blocks[index]) for index in playlist]
    join_blocks([tmp / f"block_{index:03d}.mp4" for index in playlist], lengths, canvas.fps, tmp / BLOCK_AUDIO, out)
