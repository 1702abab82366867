"""Content-addressed files: what tasks take in and give back across the executor seam.

A task names its inputs and outputs as artifacts (a file name in its workdir -> the SHA-256 of the bytes), never
as paths on the appliance, so an executor on another machine can stage them in and out. On the appliance an
artifact lives once under ``artifacts/<2 hex>/<digest>``, read-only; media fetched for a movie, a scene's video
and a cached render are all the same kind of thing. Published outputs are hard links to it.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import stat
import time
import uuid
from pathlib import Path

CHUNK = 1 << 20


def safe_name(name: object) -> str:
    """A task's result names files in its workdir; it is untrusted, so only plain names pass."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise ValueError(f"renderer returned an unsafe output name {name!r}")
    return name


def link_or_copy(src: Path, dst: Path) -> None:
    """The one way files move on the appliance: a hard link when the filesystem allows, else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


@functools.lru_cache(maxsize=4096)
def _digest(path: str, mtime_ns: int, size: int, inode: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, remembered per (path, mtime, size, inode)."""
    st = os.stat(path)
    return _digest(str(Path(path).resolve()), st.st_mtime_ns, st.st_size, st.st_ino)


class Artifacts:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"not an artifact digest: {digest!r}")
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        try:
            return self.path(digest).is_file()
        except ValueError:
            return False

    def put(self, src: Path) -> str:
        """Take in a regular file (never a symlink); returns its digest. The source stays where it is."""
        if not stat.S_ISREG(os.lstat(src).st_mode):
            raise ValueError(f"{src.name} is not a regular file")
        digest = file_digest(src)
        dest = self.path(digest)
        if not dest.exists():
            dest.parent.mkdir(exist_ok=True)
            staging = dest.parent / f".{digest}.{uuid.uuid4().hex}"
            link_or_copy(src, staging)
            if os.geteuid() == 0:  # a sandboxed task's uid wrote it: the stored artifact belongs to the server
                os.chown(staging, 0, 0)
            os.chmod(staging, 0o444)
            os.replace(staging, dest)
        return digest

    def stage_in(self, inputs: dict[str, str], workdir: Path) -> None:
        """Place each input under its name in a workdir; the task may read it, never change it."""
        for name, digest in inputs.items():
            link_or_copy(self.path(digest), workdir / name)

    def sweep(self, keep: set[str], min_age_s: float) -> int:
        """Remove artifacts nothing refers to any more (and old enough not to be in flight)."""
        cutoff, removed = time.time() - min_age_s, 0
        for sub in self.root.iterdir():
            for entry in sub.iterdir() if sub.is_dir() else ():
                if entry.name not in keep and entry.stat().st_mtime < cutoff:
                    entry.unlink(missing_ok=True)
                    removed += 1
        return removed
