"""Outputs on local disk: published by atomic rename, so a half-written output is never served.

Layout under the data dir: outputs/<job_id>/<files>; cache/<key>/<files> (content-addressed renders);
work/<task_id>/ (task workdirs, deleted when their job ends); logs/<task_id>.log.
"""
from __future__ import annotations

import os
import shutil
import stat
import time
import uuid
from pathlib import Path

CONTENT_TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                 ".webp": "image/webp", ".gif": "image/gif", ".vtt": "text/vtt; charset=utf-8",
                 ".json": "application/json", ".txt": "text/plain; charset=utf-8"}


class Store:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir
        for sub in ("outputs", "cache", "work", "logs", "tmp"):
            (data_dir / sub).mkdir(parents=True, exist_ok=True)

    def workdir(self, task_id: str) -> Path:
        return self.root / "work" / task_id

    def log_path(self, task_id: str) -> Path:
        return self.root / "logs" / f"{task_id}.log"

    def job_dir(self, job_id: str) -> Path:
        return self.root / "outputs" / job_id

    def cache_dir(self, key: str) -> Path:
        return self.root / "cache" / key

    def fresh_workdir(self, task_id: str) -> Path:
        path = self.workdir(task_id)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def publish(self, src_dir: Path, files: dict[str, str], dest: Path) -> None:
        """Link the named files of src_dir into dest atomically (staging dir + rename)."""
        staging = self.root / "tmp" / f"{dest.name}.{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        for name in files.values():
            _link_or_copy(src_dir / safe_name(name), staging / name)
        if dest.exists():  # a re-run replaces an earlier attempt's files
            shutil.rmtree(dest)
        os.rename(staging, dest)

    def file_path(self, job_id: str, name: str) -> Path | None:
        if "/" in name or name.startswith("."):
            return None
        path = self.job_dir(job_id) / name
        return path if path.is_file() else None

    def remove_job(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def remove_work(self, task_ids: list[str]) -> None:
        for task_id in task_ids:
            shutil.rmtree(self.workdir(task_id), ignore_errors=True)

    def clean_tmp(self) -> None:
        for entry in (self.root / "tmp").iterdir():
            shutil.rmtree(entry, ignore_errors=True)

    def free_disk_mb(self) -> int:
        return shutil.disk_usage(self.root).free // (1024 * 1024)

    def sweep(self, max_age_s: float) -> list[str]:
        """Delete job outputs older than max_age_s; returns the job ids removed."""
        cutoff, removed = time.time() - max_age_s, []
        for entry in (self.root / "outputs").iterdir():
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed


def safe_name(name: str) -> str:
    """A renderer's result names files in its workdir; it is untrusted, so only plain names pass."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise ValueError(f"renderer returned an unsafe output name {name!r}")
    return name


def _link_or_copy(src: Path, dst: Path) -> None:
    safe_name(src.name)
    if not stat.S_ISREG(os.lstat(src).st_mode):  # lstat: a symlink to the database is not an output
        raise FileNotFoundError(f"renderer output {src.name} is not a regular file")
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    # the sandbox uid wrote the file; the published copy belongs to the server
    if os.geteuid() == 0:
        os.chown(dst, 0, 0)
        os.chmod(dst, 0o644)
