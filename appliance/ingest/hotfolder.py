"""The hot folder: drop a Manim scene (.py) or a Movie JSON document (.json) into <inbox>/<user>/ and get
<outbox>/<user>/<name>.mp4, or <name>.error.txt saying why not.

A file is picked up once its size and mtime have held still for SETTLE_S (a copy still being written is left
alone), and recorded (path, size, mtime, sha256, job, state) before its job exists, so a restart neither renders
it twice nor forgets it: on start, jobs still in flight are followed again and finished ones delivered. watchfiles
says when something changed; a slow full rescan also catches missed events and users created since their files
were refused. Jobs are the "hotfolder" dialect's, started through JobService like any other.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import stat
import time
from pathlib import Path

import sqlite_utils
from watchfiles import Change, awatch

from appliance.datadir import DataDir
from appliance.errors import ApplianceError
from appliance.services import submissions
from appliance.services.jobs import TERMINAL, JobService, NewJob
from appliance.settings import Settings
from appliance.store import hotfolder as records
from appliance.store import ids, users
from appliance.store.db import loads
from appliance.store.rows import JobRow

log = logging.getLogger("appliance.hotfolder")
DIALECT = "hotfolder"
SETTLE_S = 1.0  # unchanged this long: the writer is done
TICK_S = 0.25
KINDS = (".py", ".json")
IGNORED_SUFFIXES = (".tmp", ".part", ".crdownload", ".swp", "~")


class HotFolder:
    def __init__(self, settings: Settings, db: sqlite_utils.Database, service: JobService, datadir: DataDir) -> None:
        if settings.hotfolder_quality not in submissions.FRAMES:
            raise ApplianceError(f"hotfolder_quality must be one of: {', '.join(submissions.FRAMES)}")
        self.inbox = Path(settings.hotfolder_dir)
        self.outbox = Path(settings.hotfolder_outbox) if settings.hotfolder_outbox else self.inbox.parent / "outbox"
        self.quality, self.db, self.service, self.datadir = settings.hotfolder_quality, db, service, datadir
        self.rescan_s = max(0.2, settings.hotfolder_rescan_s)
        self._candidates: dict[Path, tuple[int, int, float]] = {}  # path -> size, mtime_ns, unchanged since
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._delivering: set[str] = set()  # job ids: the listener and the resume may both report one end

    # ---- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.outbox.mkdir(parents=True, exist_ok=True)
        self.service.listen(DIALECT, self._on_job_event)
        self._resume()
        for loop in (self._watch(), self._settle_loop(), self._rescan_loop()):
            self._spawn(loop)
        log.info("hot folder: watching %s, delivering to %s", self.inbox, self.outbox)

    async def stop(self) -> None:
        self._stop.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _resume(self) -> None:
        """Files whose job was in flight when the server stopped: deliver the finished, follow the rest."""
        for row in records.in_flight(self.db):
            job = self.service.find(row["job_id"])
            if job is None:  # stopped between the record and the job: the rescan submits it afresh
                records.update(self.db, row["id"], state="abandoned")
            elif job["status"] in TERMINAL:
                self._spawn(self._deliver(row["job_id"]))
            elif row["state"] == "submitting":
                records.update(self.db, row["id"], state="submitted")

    # ---- noticing files ----------------------------------------------------------------------------------
    async def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                async for changes in awatch(self.inbox, stop_event=self._stop, debounce=200, step=50):
                    for change, path in changes:
                        if change != Change.deleted:
                            self._notice(Path(path))
            except (OSError, RuntimeError) as exc:  # the inbox removed or unreadable: the rescan carries on
                log.warning("hot folder watch failed (%s); retrying", exc)
                await asyncio.sleep(self.rescan_s)

    async def _rescan_loop(self) -> None:
        while True:
            for path in await asyncio.to_thread(self._files):
                self._notice(path)
            await asyncio.sleep(self.rescan_s)

    def _files(self) -> list[Path]:
        return [Path(folder, name) for folder, _dirs, names in os.walk(self.inbox) for name in names]

    def _notice(self, path: Path) -> None:
        if path not in self._candidates and _wanted(path):
            self._candidates[path] = (-1, -1, time.monotonic())

    async def _settle_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for path in self._settled():
                try:
                    await self._pick(path)
                except Exception:  # noqa: BLE001 - one bad file never stops the folder
                    log.exception("hot folder: %s could not be picked up", path)

    def _settled(self) -> list[Path]:
        """Candidates unchanged for SETTLE_S (taken off the list); vanished ones are dropped."""
        now, ready = time.monotonic(), []
        for path, (size, mtime, since) in list(self._candidates.items()):
            try:
                st = path.stat()
            except OSError:
                st = None
            if st is None or not stat.S_ISREG(st.st_mode):  # gone, or a folder
                del self._candidates[path]
                continue
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                self._candidates[path] = (st.st_size, st.st_mtime_ns, now)
            elif now - since >= SETTLE_S:
                del self._candidates[path]
                ready.append(path)
        return ready

    # ---- picking a file up -------------------------------------------------------------------------------
    async def _pick(self, path: Path) -> None:
        rel = path.relative_to(self.inbox).as_posix()
        st = path.stat()
        prev = records.latest(self.db, rel)
        user_name = rel.split("/", 1)[0] if "/" in rel else ""
        if prev and (prev["size"], prev["mtime_ns"]) == (st.st_size, st.st_mtime_ns) and not self._retry(prev):
            return  # known, and it has not changed
        data = await asyncio.to_thread(path.read_bytes)
        digest = hashlib.sha256(data).hexdigest()
        if prev and prev["sha256"] == digest and not self._retry(prev):
            records.update(self.db, prev["id"], size=st.st_size, mtime_ns=st.st_mtime_ns)  # touched, same bytes
            return
        fields = {"path": rel, "user_name": user_name, "size": len(data), "mtime_ns": st.st_mtime_ns,
                  "sha256": digest}
        await self._submit(rel, user_name, data, fields)

    def _retry(self, row: dict) -> bool:
        """A file refused for want of its user is tried again once the user exists; an abandoned one always."""
        if row["state"] == "abandoned":
            return True
        return row["state"] == "no_user" and users.get_user_by_name(self.db, row["user_name"]) is not None

    async def _submit(self, rel: str, user_name: str, data: bytes, fields: dict) -> None:
        user = users.get_user_by_name(self.db, user_name) if user_name else None
        if user is None:
            records.add(self.db, **fields, job_id=None, state="no_user" if user_name else "failed")
            await self._fail(rel, self._no_user(rel, user_name))
            return
        try:
            new = self._new_job(rel, user["id"], data)
        except ApplianceError as exc:
            records.add(self.db, **fields, job_id=None, state="failed", error=exc.message)
            await self._fail(rel, exc.message)
            return
        row_id = records.add(self.db, **fields, job_id=new.job_id, state="submitting")  # before the job exists
        try:
            self.service.submit(new)
        except ApplianceError as exc:  # no disk, no sandbox: said in the error file
            records.update(self.db, row_id, state="failed", error=exc.message)
            await self._fail(rel, exc.message)
            return
        records.update(self.db, row_id, state="submitted")
        log.info("hot folder: %s is job %s", rel, new.job_id)

    def _no_user(self, rel: str, user_name: str) -> str:
        if not user_name:
            return (f"Files go into a folder named after their user: {self.inbox}/<user>/{rel}. Create the user "
                    "with `appliance users create NAME` if there is none yet.")
        return (f"There is no appliance user {user_name!r}. Create it with `appliance users create {user_name}`; "
                "this file is picked up within seconds after that.")

    def _new_job(self, rel: str, user_id: str, data: bytes) -> NewJob:
        suffix, stem = Path(rel).suffix, Path(rel).stem
        request = {"source": DIALECT, "file": rel}
        job_id = ids.viralsync_job_id()
        if suffix not in KINDS:
            raise ApplianceError(f"The hot folder renders Manim scenes (.py) and Movie JSON documents (.json), "
                                 f"not {suffix or 'files without an extension'}.")
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise ApplianceError("the file is not UTF-8 text") from None
        if suffix == ".py":
            return submissions.scene_job(job_id=job_id, dialect=DIALECT, user_id=user_id, code=text,
                                         class_name=submissions.scene_class(text, stem), quality=self.quality,
                                         request=request)
        return submissions.movie_job(job_id=job_id, dialect=DIALECT, user_id=user_id, movie=_movie(text),
                                     request=request, cpu_slots=self.service.capacity.cpu)

    # ---- delivering --------------------------------------------------------------------------------------
    def _on_job_event(self, job: JobRow, event_type: str) -> None:
        if job["status"] in TERMINAL:
            self._spawn(self._deliver(job["id"]))

    async def _deliver(self, job_id: str) -> None:
        row = records.by_job(self.db, job_id)
        if row is None or row["state"] not in records.IN_FLIGHT or job_id in self._delivering:
            return  # delivered already, or being delivered
        self._delivering.add(job_id)
        try:
            await self._deliver_row(row)
        finally:
            self._delivering.discard(job_id)

    async def _deliver_row(self, row: dict) -> None:
        job_id = row["job_id"]
        job = self.service.get(job_id)
        source = self._main_output(job) if job["status"] == "completed" else None
        if source is None:
            error = job["error"] or f"the job ended {job['status']}"
            records.update(self.db, row["id"], state="failed", error=error)
            await self._fail(row["path"], f"{job_id} {job['status']}: {error}")
            return
        target = self._out(row["path"], source.suffix)
        await asyncio.to_thread(_publish, source, target)
        self._out(row["path"], ".error.txt").unlink(missing_ok=True)  # an earlier failure of the same file
        records.update(self.db, row["id"], state="delivered")
        log.info("hot folder: %s delivered to %s", row["path"], target)

    def _main_output(self, job: JobRow) -> Path | None:
        files = (loads(job["result"]) or {}).get("files", {})
        name = files.get("video") or next(iter(files.values()), None)
        return self.datadir.file_path(job["id"], name) if name else None

    def _out(self, rel: str, suffix: str) -> Path:
        return self.outbox / (Path(rel).with_suffix("").as_posix() + suffix)

    async def _fail(self, rel: str, message: str) -> None:
        log.info("hot folder: %s failed: %s", rel, message)
        target = self._out(rel, ".error.txt")
        await asyncio.to_thread(_write_text, target, message.rstrip() + "\n")


def _wanted(path: Path) -> bool:
    """Hidden files, editors' and browsers' partial files, and our own outputs are never picked up."""
    name = path.name
    return not (name.startswith((".", "~")) or name.endswith(IGNORED_SUFFIXES) or name.endswith(".error.txt"))


def _movie(text: str) -> object:
    """A bare movie, or a ViralSync-style body {"movie": ...}."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ApplianceError(f"the file is not valid JSON: {exc}") from None
    return doc["movie"] if isinstance(doc, dict) and "movie" in doc else doc


def _publish(source: Path, target: Path) -> None:
    """Copied (the output is a link to a read-only artifact), then renamed into place: never half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _write_text(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    tmp.write_text(text)
    os.replace(tmp, target)
