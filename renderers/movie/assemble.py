"""``render_assemble``: concatenate rendered scene clips, in order, into ``output.mp4`` without re-encoding.

The clips come from ``render_scene``, which gives every clip identical codec settings, so the streams are copied
(in-process with PyAV, ``mux.concat_scenes``; ffmpeg's concat demuxer when the clips' encoders differ); the moov
atom goes first (``+faststart``) for progressive playback.
"""
from __future__ import annotations

from pathlib import Path

from renderers import ffmpeg as ff
from renderers.base import RenderError, Reporter
from renderers.movie.mux import concat_scenes

OUTPUT_FILE = "output.mp4"
THUMBNAIL_FILE = "thumb.jpg"


def _scene_files(task_input: dict, workdir: Path) -> list[Path]:
    names = task_input.get("scenes")
    if not isinstance(names, list) or not names:
        raise RenderError("assemble needs at least one scene file")
    root, files = workdir.resolve(), []
    for name in names:
        path = (root / str(name)).resolve()
        if path.parent != root or not path.is_file():  # plain names only: the concat list must stay "safe"
            raise RenderError(f"scene file {name!r} is missing")
        files.append(path)
    return files


def _write_list(files: list[Path], workdir: Path) -> Path:
    listing = workdir / "scenes.txt"
    quoted = (path.name.replace("'", "'\\''") for path in files)  # the concat list's quoting rule
    listing.write_text("".join(f"file '{name}'\n" for name in quoted))
    return listing


def _concat(files: list[Path], workdir: Path, output: Path) -> dict:
    """In-process (``mux.concat_scenes``) when the clips share their parameter sets, as clips of one encoder
    do; else, or if PyAV fails, ffmpeg's concat (which re-encodes clips of different encoders). Returns the
    output's meta (``ff.video_meta``'s fields)."""
    try:
        return concat_scenes(files, output)
    except ff.FfmpegError:
        output.unlink(missing_ok=True)
    ff.concat_copy(_write_list(files, workdir), output)
    return ff.video_meta(output)


def render_assemble(task_input: dict, workdir: Path, report: Reporter) -> dict:
    workdir = Path(workdir)
    files = _scene_files(task_input, workdir)
    report.progress(0.0, "assembling")
    output, thumbnail = workdir / OUTPUT_FILE, workdir / THUMBNAIL_FILE
    try:
        if len(files) == 1:  # nothing to concatenate: an in-process copy into a faststart MP4
            meta = ff.remux_faststart_av(files[0], output)
        else:
            meta = _concat(files, workdir, output)
        report.progress(0.8, "assembling")
        given = task_input.get("thumbnail")  # the last scene's last frame, when its renderer kept it
        if given and (workdir / str(given)).is_file() and (workdir / str(given)).parent == workdir:
            (workdir / str(given)).replace(thumbnail)
        else:
            ff.extract_last_frame(output, thumbnail)
    except ff.FfmpegError as exc:
        report.log(str(exc))
        raise RenderError(f"assembling {len(files)} scenes failed: {str(exc).splitlines()[-1][:300]}") from None
    report.progress(1.0, "assembling")
    return {"files": {"video": OUTPUT_FILE, "thumbnail": THUMBNAIL_FILE},
            "meta": {"duration": meta["duration"], "width": meta["width"], "height": meta["height"],
                     "fileSize": output.stat().st_size}}
