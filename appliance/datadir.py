"""The data dir's layout, in one place: where outputs, artifacts, task workdirs, logs and scratch files live, and
the housekeeping of each (outputs are published by atomic rename, so a half-written output is never served).

Layout under the data dir: outputs/<job_id>/<files> (hard links to artifacts); artifacts/<2 hex>/<sha256>
(content-addressed: task inputs and outputs, cached renders); work/<task_id>/ (task workdirs of the local
executor, removed when the task ends); logs/<task_id>.log.
"""
from __future__ import annotations

import glob
import os
import shutil
import time
import uuid
from pathlib import Path

from appliance.runtime.artifacts import Artifacts, link_or_copy

MEDIA_CACHE_S = 86400  # a downloaded media file is revalidated by ETag anyway: a day of reuse is plenty


class DataDir:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir
        for sub in ("outputs", "artifacts", "work", "logs", "tmp"):
            (data_dir / sub).mkdir(parents=True, exist_ok=True)

    def log_path(self, task_id: str) -> Path:
        return self.root / "logs" / f"{task_id}.log"

    def job_dir(self, job_id: str) -> Path:
        return self.root / "outputs" / job_id

    def publish(self, artifacts: Artifacts, result: dict, job_id: str) -> None:
        """Link a result's files (role -> name, each an artifact) into outputs/<job_id> atomically."""
        dest = self.job_dir(job_id)
        staging = self.root / "tmp" / f"{job_id}.{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        for name in result["files"].values():
            link_or_copy(artifacts.path(result["outputs"][name]), staging / name)
        if dest.exists():  # a re-run replaces an earlier attempt's files
            shutil.rmtree(dest)
        os.rename(staging, dest)

    def size(self, job_id: str) -> int:
        """Bytes of a job's published outputs (each file by its own size, links to one artifact included)."""
        with os.scandir(self.job_dir(job_id)) as entries:
            return sum(entry.stat(follow_symlinks=False).st_size for entry in entries if entry.is_file())

    def file_path(self, job_id: str, name: str) -> Path | None:
        if "/" in name or name.startswith("."):
            return None
        path = self.job_dir(job_id) / name
        return path if path.is_file() else None

    def remove_job(self, job_id: str) -> None:
        """The job's outputs and its tasks' logs (``<job>.t000.log``, …)."""
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        for log in (self.root / "logs").glob(f"{glob.escape(job_id)}.*.log"):
            log.unlink(missing_ok=True)

    def clean_tmp(self) -> None:
        """At start: staging dirs and workdirs of tasks a crash interrupted (they re-run from their inputs)."""
        for entry in [*(self.root / "tmp").iterdir(), *(self.root / "work").iterdir()]:
            shutil.rmtree(entry, ignore_errors=True)

    def free_disk_mb(self) -> int:
        return shutil.disk_usage(self.root).free // (1024 * 1024)

    def sweep(self, max_age_s: float) -> list[str]:
        """Delete job outputs and task logs older than max_age_s, and media downloads unused for a day;
        returns the ids of the jobs whose outputs were removed."""
        cutoff, removed = time.time() - max_age_s, []
        for entry in (self.root / "outputs").iterdir():
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        _remove_older(self.root / "logs", cutoff)
        _remove_older(self.root / "media-cache", time.time() - MEDIA_CACHE_S)
        return removed


def _remove_older(folder: Path, cutoff: float) -> None:
    for entry in folder.iterdir() if folder.is_dir() else ():
        try:
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                entry.unlink()
        except OSError:
            pass
