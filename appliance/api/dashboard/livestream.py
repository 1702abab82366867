"""A running Manim job's growing HLS playlist (issue #22 item 2): written from the live index its task's worker
mirrors into the host workdir (data_dir/work/<task>/live/, executors/live_mirror.py), with the init segment and
the media segments served from there.

The playlist is HLS version 7 with fMP4 segments: ``#EXT-X-MAP`` names the init segment, each piece of the
scene is one ``#EXTINF`` segment, ``#EXT-X-PLAYLIST-TYPE:EVENT`` (segments are only ever added), and
``#EXT-X-ENDLIST`` once the renderer wrote its last segment or the job has ended. A comment line carries the
codec string (``# CODECS="avc1.PPCCLL"``) for the dashboard's Media Source Extensions player; HLS players ignore
it. After the job completes its workdir is gone with the segments: the playlist is a 404 and the job page plays
the final ``video.mp4``, whose frames are the segments' (renderers/manim_live.py).

The folder is read as untrusted: where a task has no filesystem of its own (``task_fs = off``) it is the task's
workdir. The folder and each file are opened without following links, must be regular files of a bounded size,
and only the names the validated index lists are served (a name is never a path).
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from litestar import Response

from appliance.delivery import scenestream
from appliance.errors import NotFound
from appliance.runtime.artifacts import Artifacts
from appliance.runtime.executors import live_mirror as mirror
from appliance.services.jobs import JobService
from appliance.store import jobs
from appliance.store.db import loads

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
ENDED = ("done", "failed", "cancelled")


def _open_live(workdir: Path) -> int | None:
    try:
        return os.open(workdir / mirror.LIVE_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None


def find(data_dir: Path, tasks: list[Any]) -> tuple[Path, dict[str, Any]] | None:
    """(the live folder's workdir, its validated index) of the job's Manim task that has one, running first; for
    a movie, of its finished scenes (delivery/scenestream.py)."""
    if any(t["renderer"] == "movie.scene" for t in tasks):
        return _movie(data_dir, tasks)
    ordered = sorted(tasks, key=lambda t: t["status"] != "running")
    for task in ordered:
        if task["renderer"] != "manim" or task["status"] not in ("running", "queued"):
            continue
        workdir = data_dir / "work" / task["id"]
        fd = _open_live(workdir)
        if fd is None:
            continue
        try:
            index = mirror.clean_index(mirror.read_bounded(fd, mirror.INDEX, mirror.MAX_INDEX))
        except (OSError, mirror.Refused):
            continue
        finally:
            os.close(fd)
        return workdir, index
    return None


def _movie(data_dir: Path, tasks: list[Any]) -> tuple[Path, dict[str, Any]] | None:
    """A rendering movie's finished scenes, in order up to the first one not done, as a live stream built in
    data_dir/tmp/live-<job>/ (removed once the movie is assembled or has ended: the page plays the output)."""
    workdir = data_dir / "tmp" / f"live-{tasks[0]['job_id']}"
    if all(t["status"] in ENDED for t in tasks if t["renderer"] == "movie.assemble"):
        shutil.rmtree(workdir, ignore_errors=True)
        return None
    store, clips, fps = Artifacts(data_dir / "artifacts"), [], 0
    for task in sorted((t for t in tasks if t["renderer"] == "movie.scene"), key=lambda t: t["idx"]):
        result = loads(task["result"], {}) if task["status"] == "done" else {}
        name = (result.get("files") or {}).get("scene")
        digest = (result.get("outputs") or {}).get(name) if name else None
        if not isinstance(digest, str) or not store.has(digest):
            break
        clips.append(digest)
        fps = int(loads(task["input"], {}).get("fps") or 0)
    if not clips or not 1 <= fps <= 240:
        return None
    index = scenestream.build([store.path(d) for d in clips], fps, workdir / mirror.LIVE_DIR, ",".join(clips))
    if index is None:
        return None
    try:
        return workdir, mirror.clean_index(json.dumps(index).encode())
    except mirror.Refused:
        return None


def playlist(index: dict[str, Any], base: str, ended: bool) -> str:
    """The m3u8 text; ``base``: the URL prefix of the segments (…/live/)."""
    segments = index["segments"]
    target = max((math.ceil(s["duration"]) for s in segments), default=1)
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{max(1, target)}", "#EXT-X-MEDIA-SEQUENCE:0",
             "#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-INDEPENDENT-SEGMENTS", f'# CODECS="{index["codec"]}"',
             f'#EXT-X-MAP:URI="{base}{mirror.INIT}"']
    for segment in segments:
        lines += [f"#EXTINF:{segment['duration']:.6f},", base + segment["name"]]
    if index["done"] or ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def segment(data_dir: Path, tasks: list[Any], name: str) -> bytes | None:
    """The bytes of ``name`` (init.mp4 or a segment the index lists), or None."""
    if name != mirror.INIT and mirror.SEGMENT.fullmatch(name) is None:
        return None
    found = find(data_dir, tasks)
    if found is None or (name != mirror.INIT and name not in {s["name"] for s in found[1]["segments"]}):
        return None
    fd = _open_live(found[0])
    if fd is None:
        return None
    try:
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode):
            return None
        return mirror.read_bounded(fd, name, mirror.MAX_FILE)
    except (OSError, mirror.Refused):
        return None
    finally:
        os.close(fd)


# ---- the two routes, for the dashboard's session (api/dashboard/api.py) and the admin token (api/admin.py) ----
async def playlist_response(service: JobService, job_id: str, base: str) -> Response:
    """The job's live playlist with its segments under ``base`` (the URL path of the caller's own ``live/``); 404
    before its first segment is mirrored and once the job's workdir is gone (the final video is then the way)."""
    job = service.get(job_id)
    found = await asyncio.to_thread(find, service.settings.data_dir, service.tasks(job["id"]))
    if found is None:
        raise NotFound(f"job {job_id} has no live stream")
    text = playlist(found[1], base, job["status"] in jobs.TERMINAL)
    return Response(text, media_type=PLAYLIST_TYPE, headers={"Cache-Control": "no-store",
                                                             "X-Content-Type-Options": "nosniff"})


async def segment_response(service: JobService, job_id: str, name: str) -> Response:
    """The init segment or a media segment of the live playlist: only the names its index lists."""
    job = service.get(job_id)
    data = await asyncio.to_thread(segment, service.settings.data_dir, service.tasks(job["id"]), name)
    if data is None:
        raise NotFound(f"no live segment {name} for job {job_id}")
    return Response(data, media_type="video/mp4", headers={"Cache-Control": "private, max-age=3600",
                                                           "X-Content-Type-Options": "nosniff"})
