"""`appliance backup DEST` and `appliance restore SRC --data-dir NEW`.

A backup is a directory: appliance.db (SQLite's online backup of the live database, so the server keeps
serving), every other file of the data dir that is not scratch, and manifest.json (each file's size and SHA-256)
written last — a backup without a manifest is unfinished. Outputs and artifacts never change once written, so
they are hard-linked where DEST is on the same file system (a backup then costs no space until the originals go)
and copied elsewhere.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

from appliance import settings as settings_mod
from appliance.errors import ApplianceError
from appliance.store import backup as db_backup
from appliance.store.db import now_iso, open_db
from appliance.store.lock import DataDirLock

DB = "appliance.db"
# Scratch, the live database (copied by the backup API instead) and the lock: never in a backup.
SKIP = {DB, f"{DB}-wal", f"{DB}-shm", "appliance.lock", "work", "tmp", "media-cache"}
IMMUTABLE = ("artifacts", "outputs")
MANIFEST = "manifest.json"


def backup(data_dir: Path, dest: Path, progress: Callable[[float], None] | None = None) -> dict:
    if not (data_dir / DB).is_file():
        raise ApplianceError(f"no database in {data_dir}: is --data-dir the appliance's data dir?")
    _require_empty(dest, "backup destination")
    db_backup.snapshot(data_dir / DB, dest / DB)  # first: every output the copy names exists already
    rels, files = list(_walk(data_dir)), []
    for done, rel in enumerate(rels, 1):
        if _place(data_dir / rel, dest / rel, rel):
            files.append(_entry(dest, rel))
        if progress is not None:
            progress(done / len(rels))
    manifest = {"version": 1, "createdAt": now_iso(), "appVersion": metadata.version("render-appliance"),
                "dataDir": str(data_dir), "dataDirResolved": str(data_dir.resolve()),
                "database": {"path": DB, "size": (dest / DB).stat().st_size, "sha256": _sha256(dest / DB)},
                "files": files}
    tmp = dest / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, dest / MANIFEST)
    return manifest


def restore(src: Path, data_dir: Path) -> dict:
    manifest = _manifest(src)
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = DataDirLock(data_dir)
    lock.acquire("appliance restore")  # a server on this data dir: refused, naming it
    try:
        if [p for p in data_dir.iterdir() if p.name != "appliance.lock"]:
            raise ApplianceError(f"{data_dir} is not empty: restore into a new, empty --data-dir")
        for entry in manifest["files"]:
            _place(src / entry["path"], data_dir / entry["path"], entry["path"])
            _check(data_dir / entry["path"], entry)
        _check(src / DB, manifest["database"])
        db_backup.snapshot(src / DB, data_dir / DB)
        db = open_db(data_dir / DB)  # a newer appliance migrates the copy forward here
        db_backup.relocate(db, [manifest["dataDir"], manifest["dataDirResolved"]], str(data_dir))
        db.conn.close()
    finally:
        lock.release()
    return manifest


def _require_empty(dest: Path, what: str) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ApplianceError(f"{what} {dest} is not an empty directory")
    dest.mkdir(parents=True, exist_ok=True)


def _manifest(src: Path) -> dict:
    try:
        return json.loads((src / MANIFEST).read_text())
    except FileNotFoundError:
        raise ApplianceError(f"{src} is not a finished backup (no {MANIFEST})") from None
    except ValueError as exc:
        raise ApplianceError(f"{src / MANIFEST} is damaged: {exc}") from None


def _walk(root: Path) -> Iterator[str]:
    """Relative paths of the files to keep; top-level *.log files are the server's own output."""
    for top in sorted(root.iterdir()):
        if top.name in SKIP or (top.is_file() and top.suffix == ".log"):
            continue
        if top.is_file():
            yield top.name
            continue
        for folder, dirs, names in os.walk(top):
            dirs.sort()
            for name in sorted(names):
                yield str(Path(folder, name).relative_to(root))


def _place(source: Path, target: Path, rel: str) -> bool:
    """Link or copy one file; False when it vanished (the retention sweep removed it during the backup)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not (rel.split("/", 1)[0] in IMMUTABLE and _link(source, target)):
            shutil.copy2(source, target)
    except FileNotFoundError:
        return False
    return True


def _entry(root: Path, rel: str) -> dict:
    path = root / rel
    return {"path": rel, "size": path.stat().st_size, "sha256": _digest(rel, path)}


def _link(source: Path, target: Path) -> bool:
    try:
        os.link(source, target)
        return True
    except OSError:  # another file system, or links not allowed there: copy instead
        return False


def _digest(rel: str, path: Path) -> str:
    """An artifact is named by its SHA-256 already; anything else is hashed."""
    name = Path(rel).name
    if rel.startswith("artifacts/") and len(name) == 64 and all(c in "0123456789abcdef" for c in name):
        return name
    return _sha256(path)


def _check(path: Path, want: dict) -> None:
    """Every restored byte is read back: a damaged backup is refused, not served."""
    if not path.is_file() or path.stat().st_size != want["size"] or _sha256(path) != want["sha256"]:
        raise ApplianceError(f"{path} does not match the backup's manifest (a damaged or changed backup)")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- the commands ------------------------------------------------------------------------------------------
def cmd_backup(args: argparse.Namespace) -> int:
    s = settings_mod.load(args.config, data_dir=args.data_dir)
    started = time.monotonic()
    from appliance.cli.client import Progress  # a percentage line on a terminal

    line = Progress(f"backup to {args.dest}")
    manifest = backup(s.data_dir, Path(args.dest), lambda fraction: line.show(fraction))
    line.show(1.0, "done", final=True)
    size = sum(f["size"] for f in manifest["files"]) + manifest["database"]["size"]
    print(f"backed up {s.data_dir} to {args.dest}: the database and {len(manifest['files'])} files "
          f"({size / 2**20:.1f} MB) in {time.monotonic() - started:.1f} s")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    s = settings_mod.load(args.config, data_dir=args.data_dir)
    manifest = restore(Path(args.src), s.data_dir)
    print(f"restored the backup of {manifest['createdAt']} ({len(manifest['files'])} files) into {s.data_dir}; "
          f"start it with: appliance serve --data-dir {s.data_dir}")
    return 0


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("backup", parents=[common], help="copy the database (online) and the data dir's files "
                       "into DEST, an empty directory, while the server keeps serving")
    p.add_argument("dest", help="an empty (or new) directory to copy into")
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("restore", parents=[common], help="restore a backup into --data-dir, which must be new "
                       "or empty and not in use")
    p.add_argument("src", help="a directory appliance backup wrote")
    p.set_defaults(func=cmd_restore)
