"""Resume, never restart (issue #22 item 4): what an interrupted Manim render had finished becomes a reuse source
of its next attempt.

While a whole-scene ``manim`` task renders, its worker mirrors each finished piece's fMP4 segment into the host
workdir (data_dir/work/<task>/live/, executors/live_mirror.py). After a crash, ``Scheduler.recover`` re-queues
the task and wipes work/; just before, ``salvage`` joins the mirrored init segment and complete segments into one
fragmented MP4 (a valid MP4: PyAV reads it as any other), takes it into the artifact store, and adds it to the
task's input as the first ``reuse`` source (``resume.mp4``, staged like the earlier renders' ``reuse_N.mp4``),
with the piece index the segments carry (address, frames, drawing ms). The next attempt's Segmenter
(renderers/manim_segments.py) then steps those pieces instead of drawing them, and copies their packets: the
first missing piece is the first one drawn.

Why the artifact store and the task's input, not a folder of its own: the re-queued attempt must find the pieces
through the one mechanism that stages and checks reuse sources (the parameter sets must match the encoder's, the
frames each address claims must be there), and an artifact outlives any number of restarts (a second crash before
the next attempt drew anything finds the same input); the store's own sweep removes it with the job.

The mirrored folder is read as untrusted (where a task has no filesystem of its own, ``task_fs = off``, the task
wrote it): the index is checked field by field, files are opened without following links and bounded, and the
joined file must demux to exactly the frames the index claims, or nothing is salvaged.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

from appliance.runtime.artifacts import Artifacts
from appliance.runtime.executors import live_mirror as mirror

NAME = "resume.mp4"


def salvage(workdir: Path, scratch: Path, artifacts: Artifacts) -> dict[str, Any] | None:
    """{"video": digest, "pieces": [[address, frames, ms], ...]} of the complete segments in ``workdir``'s live
    folder, stored as an artifact; None where there are none or they do not hold up."""
    try:
        fd = os.open(workdir / mirror.LIVE_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    joined = scratch / f".resume.{uuid.uuid4().hex}.mp4"
    try:
        index = mirror.clean_index(mirror.read_bounded(fd, mirror.INDEX, mirror.MAX_INDEX))
        segments = index["segments"]
        if not segments:
            return None
        budget = mirror.MAX_TOTAL
        with open(joined, "wb") as out:
            for name in [mirror.INIT, *(s["name"] for s in segments)]:
                data = mirror.read_bounded(fd, name, min(mirror.MAX_FILE, budget))
                budget -= len(data)
                out.write(data)
        if _frames(joined) != sum(s["frames"] for s in segments):
            return None
        return {"video": artifacts.put(joined), "pieces": [[s["address"], s["frames"], s["ms"]] for s in segments]}
    except (OSError, ValueError, mirror.Refused):
        return None
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            joined.unlink()


def _frames(video: Path) -> int:
    """The video packets the file demuxes to (one per frame), or -1 where it does not open as a video."""
    import av

    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.pts is not None)
    except (av.error.FFmpegError, IndexError):
        return -1


def resumed_input(task_input: dict[str, Any], salvaged: dict[str, Any]) -> dict[str, Any]:
    """The task's input with the salvaged pieces staged as its first reuse source (they are this very render's,
    so their addresses win over any earlier render's)."""
    reuse = task_input.get("reuse") if isinstance(task_input.get("reuse"), dict) else {}
    sources = [s for s in (reuse or {}).get("sources", []) if isinstance(s, dict) and s.get("video") != NAME]
    return {**task_input, "artifacts": {**dict(task_input.get("artifacts") or {}), NAME: salvaged["video"]},
            "reuse": {**(reuse or {}), "sources": [{"video": NAME, "pieces": salvaged["pieces"]}, *sources]}}
