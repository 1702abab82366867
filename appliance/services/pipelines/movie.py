"""Movie JSON document -> fetch its media, then N scene tasks and one assemble task.

Planning runs in a worker thread (it downloads): every source is fetched once, taken into the artifact store,
and named to its scene task by digest, so the bytes a scene renders are exactly the bytes its cache key was
computed from (another job re-downloading the same URL meanwhile cannot change them).
"""
from __future__ import annotations

import os
from typing import Any

from appliance.runtime.artifacts import Artifacts
from appliance.services.pipelines import media
from appliance.settings import Settings
from appliance.store import ids
from appliance.store.jobs import WORK_KEY, TaskDef
from appliance.store.rows import Link
from renderers.movie import spec

SpecError = spec.SpecError
# A frame of a scene with video layers costs about this many times a frame of a scene without (decoding, and x264
# on every frame, against stills encoded once and repeated): the seed's 6 s video scene took ~4.3 CPU-s, its 4 s
# text scene ~0.35. Only the order matters: the scheduler runs a scene that a longer one of its job outlasts
# anyway at a lower CPU weight (scheduler.SLACK_WEIGHT).
VIDEO_FRAME_WORK = 8


def validate(movie: object) -> dict[str, Any]:
    """The normalized movie, or SpecError naming the field (the dialect puts it in its own error shape)."""
    return spec.validate_and_normalize(movie)


def scene_count(movie: dict[str, Any]) -> int:
    return len(movie["scenes"])


class MoviePipeline:
    deferred = True

    def __init__(self, settings: Settings, artifacts: Artifacts) -> None:
        self.settings, self.artifacts = settings, artifacts

    def plan(self, payload: dict[str, Any]) -> list[TaskDef]:
        """payload: {"movie": <normalized movie>, "job_id": ...}. Blocking: call it from a worker thread."""
        movie = payload["movie"]
        digests = self._fetch_all(movie)
        return self._tasks(payload["job_id"], movie, digests)

    def _fetch_all(self, movie: dict[str, Any]) -> dict[str, tuple[str, str]]:
        """source -> (file suffix, artifact digest of its bytes)."""
        s = self.settings
        cache = s.data_dir / "media-cache"
        cache.mkdir(exist_ok=True)
        out: dict[str, tuple[str, str]] = {}
        for scene in movie["scenes"]:
            for src in spec.scene_sources(scene):
                if src not in out:
                    path = media.fetch_source(src, cache, s.assets_dir, max_bytes=s.media_max_mb * 2**20,
                                              timeout_s=s.media_timeout_s, allow_loopback=s.allow_loopback_targets)
                    out[src] = (os.path.splitext(path)[1][:8], self.artifacts.put(path))
        return out

    def _tasks(self, job_id: str, movie: dict[str, Any], fetched: dict[str, tuple[str, str]]) -> list[TaskDef]:
        w, h, fps = movie["width"], movie["height"], movie["fps"]
        tasks: list[TaskDef] = []
        links: list[Link] = []
        for n, scene in enumerate(movie["scenes"]):
            srcs = spec.scene_sources(scene)
            names = {src: f"src_{i}{fetched[src][0]}" for i, src in enumerate(srcs)}
            key = spec.scene_cache_key(scene, w, h, fps, {src: fetched[src][1] for src in srcs})
            has_video = any(layer["type"] == "video" for layer in scene["layers"])
            work = round(scene["duration"] * fps) * (VIDEO_FRAME_WORK if has_video else 1)
            tasks.append(TaskDef(renderer="movie.scene", name=scene["id"], cpu=1.0, mem_mb=1024 if has_video else 600,
                                 cache_key=key,
                                 input={"scene": scene, "width": w, "height": h, "fps": fps, "sources": names,
                                        "artifacts": {names[s]: fetched[s][1] for s in srcs},
                                        WORK_KEY: work}))
            links.append({"task": ids.task_id(job_id, n), "file": "scene", "as": f"scene_{n:03d}.mp4"})
        last: Link = {"task": links[-1]["task"], "file": "thumbnail", "as": "thumb_last.jpg", "optional": True}
        tasks.append(TaskDef(renderer="movie.assemble", name="assemble", cpu=1.0, mem_mb=300,
                             depends_on=list(range(len(tasks))),
                             input={"scenes": [link["as"] for link in links], "link_inputs": [*links, last],
                                    "thumbnail": "thumb_last.jpg", "width": w, "height": h, "fps": fps}))
        return tasks
