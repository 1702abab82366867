"""The worker side of the Dask executor: runs on a Dask worker, never on the appliance.

``run_task`` is the function the appliance submits for each task attempt. It takes the task's spec and its
input files as bytes (no shared filesystem), runs the task through a worker-local ``LocalExecutor`` — the same
warm zygote and sandbox as a task on the appliance, created once per worker process — and returns the exit
message with the output files as bytes and the task's log. Outputs are verified by content on the appliance,
where they are taken in, not here: the appliance publishes nothing it did not check itself.

Progress goes back through ``Worker.log_event(TOPIC, ...)``: the worker's batched stream to the scheduler, which
forwards it to the appliance's client (``Client.subscribe_topic``). That path is ordered and needs no per-task
object on the scheduler (a ``Queue`` or ``Variable`` per task would have to be created and deleted, and Pub/Sub
drops messages published before the subscriber is known). Progress is advisory: one lost message only delays
the next.

Cancel comes the other way, as ``Client.run(kill, key, reason)`` on every worker: ``Future.cancel`` does not
stop a function that is already running. The key is remembered, so an attempt cancelled just before it started
here does not start at all.

GPUs: the appliance grants a worker's GPUs itself, as it grants its own (``resources.GpuPool``): ``gpus`` tells it
what this worker has (measured by ``appliance worker`` and handed down in ``$APPLIANCE_WORKER_GPUS``, else
measured here once), and an attempt granted one arrives pinned to this worker with the GPU's index here, so it
sees only that GPU (``CUDA_VISIBLE_DEVICES``, its device nodes bound into the sandbox) as a local task would.

With ``dask worker --preload appliance.runtime.executors.dask_worker`` (what ``appliance worker`` does) the
zygote starts with the worker; otherwise with the first task. The worker's data dir is ``$APPLIANCE_WORKER_DIR``
or ``appliance/`` in the Dask worker's local directory; settings (sandbox, preload) come from
``$APPLIANCE_WORKER_CONFIG`` or the default config, and the APPLIANCE_* environment — ``launcher_socket``
included: a worker that runs as an unprivileged user gets its sandboxed processes from the privileged launcher
on its machine (``appliance launcher --data-dir`` the worker dir), as the appliance server does.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import stat
import threading
import uuid
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

from appliance import settings as settings_mod
from appliance.runtime.artifacts import Artifacts, file_digest
from appliance.runtime.executors.base import ExitMessage, Message, TaskSpec
from appliance.runtime.executors.local import LocalExecutor, TaskHandle
from appliance.runtime.resources import Gpu, measure_gpus
from appliance.runtime.sandbox import Limits

TOPIC = "appliance-task"
CANCELLED_REMEMBERED = 10_000
GPUS_ENV = "APPLIANCE_WORKER_GPUS"  # this worker's GPUs as `appliance worker` measured them (JSON)

_lock = threading.Lock()
_executor: LocalExecutor | None = None
_gpus: tuple[Gpu, ...] | None = None
_running: dict[str, tuple[TaskHandle, str]] = {}  # key -> (handle, owner: the appliance that submitted it)
_cancelled: OrderedDict[str, str] = OrderedDict()  # key -> reason, for attempts cancelled before they started
_refs: Counter[str] = Counter()  # artifact digest -> claims of tasks here (inputs staged, outputs not yet sent)


class ClaimedArtifacts(Artifacts):
    """The worker's artifact store: every task's claim on an artifact counted, the artifact removed with the
    last claim (``_release``). A put claims under the lock the release removes under: two tasks here with the
    same output (identical renders) cannot lose it to each other's release between the put and the read."""

    def put(self, src: Path) -> str:
        if stat.S_ISREG(os.lstat(src).st_mode):  # (a symlink is refused by put, never followed here)
            file_digest(src)  # hashed outside the lock; put finds it remembered
        with _lock:
            digest = super().put(src)
            _refs[digest] += 1
        return digest

    def claim(self, digest: str) -> bool:
        """One more claim on an artifact already here; False when it is not."""
        with _lock:
            if not self.has(digest):
                return False
            _refs[digest] += 1
            return True


def worker_dir() -> Path:
    explicit = os.environ.get("APPLIANCE_WORKER_DIR")
    if explicit:
        return Path(explicit)
    from distributed import get_worker

    return Path(get_worker().local_directory) / "appliance"


def worker_settings() -> settings_mod.Settings:
    config = os.environ.get("APPLIANCE_WORKER_CONFIG")
    return settings_mod.load(Path(config) if config else None)


def local_executor() -> LocalExecutor:
    """The worker's own LocalExecutor (zygote + sandbox), created and started once per process."""
    global _executor
    with _lock:
        if _executor is None:
            s = worker_settings()
            _executor = LocalExecutor(preload=s.preload, sandbox=s.sandbox, data_dir=worker_dir(),
                                      start_timeout_s=s.task_start_timeout_s, allow_unsandboxed=s.allow_unsandboxed,
                                      launcher_socket=s.launcher_socket, task_fs=s.task_fs)
            _executor.artifacts = ClaimedArtifacts(worker_dir() / "artifacts")
        executor = _executor
    executor.start()  # idempotent; restarts a zygote that died
    return executor


def local_gpus() -> tuple[Gpu, ...]:
    """This worker's GPUs: as ``appliance worker`` measured them, else measured here (once per process)."""
    global _gpus
    if _gpus is None:  # measured outside _lock: a probe takes seconds, and cancels and stage-outs take _lock
        listed = os.environ.get(GPUS_ENV)
        found = (tuple(Gpu.from_json(g) for g in json.loads(listed)) if listed is not None
                 else measure_gpus(worker_settings()))
        with _lock:
            _gpus = _gpus if _gpus is not None else found
    return _gpus


def granted(payload: dict[str, Any]) -> dict[str, Any]:
    """The attempt's GPU grant as TaskSpec fields, checked against this worker's GPUs: a grant of a GPU this
    worker does not have (an appliance with a stale inventory) becomes no grant, never a foreign device."""
    gpu = payload.get("gpu")
    if not isinstance(gpu, int) or isinstance(gpu, bool) or gpu not in {g.index for g in local_gpus()}:
        return {"gpu": None, "nvenc": False, "gpu_compute": False}
    return {"gpu": gpu, "nvenc": payload.get("nvenc") is True, "gpu_compute": payload.get("gpu_compute") is True}


# ---- the task -------------------------------------------------------------------------------------------------
def run_task(payload: dict[str, Any], inputs: dict[str, bytes]) -> dict[str, Any]:
    """One attempt: {"exit": message, "files": {name: bytes}, "log": bytes, "worker": address}."""
    from distributed import get_worker

    worker = get_worker()
    key, owner = payload["key"], payload["owner"]
    executor = local_executor()
    assert executor.artifacts is not None
    digests = _stage_in(executor, inputs)
    try:
        exit_message = _run(executor, worker, payload, digests)
        files = _take_outputs(executor, exit_message)
    finally:
        _release(executor, list(digests.values()))
        with _lock:
            _running.pop(key, None)
    log_path = worker_dir() / "logs" / f"{payload['task_id']}.log"
    try:
        log = log_path.read_bytes()
        log_path.unlink()
    except OSError:
        log = b""
    return {"exit": exit_message, "files": files, "log": log, "worker": worker.address, "owner": owner}


def _run(executor: LocalExecutor, worker: Any, payload: dict[str, Any], digests: dict[str, str]) -> ExitMessage:
    key = payload["key"]
    spec = TaskSpec(task_id=payload["task_id"], renderer=payload["renderer"], input=payload["input"],
                    limits=Limits(**payload["limits"]), inputs=digests, attempt=payload["attempt"], **granted(payload))
    done, box = threading.Event(), list[ExitMessage]()

    def relay(message: Message) -> None:
        if message["type"] == "exit":
            box.append(message)
            done.set()
        else:
            worker.log_event(TOPIC, {"key": key, "type": "message", "message": message})

    with _lock:
        if key in _cancelled:
            return {"type": "exit", "ok": False, "error": _cancelled[key]}
    handle = executor.submit(spec, relay)
    with _lock:
        _running[key] = (handle, payload["owner"])
        reason = _cancelled.get(key)
    if reason is not None:  # cancelled while it was being spawned
        handle.kill(reason)
    worker.log_event(TOPIC, {"key": key, "type": "started", "worker": worker.address, "pid": handle.pid})
    done.wait()
    return box[0]


def _stage_in(executor: LocalExecutor, inputs: dict[str, bytes]) -> dict[str, str]:
    """The shipped bytes into this worker's artifact store, each claimed so that no other task removes it."""
    store = executor.artifacts
    assert isinstance(store, ClaimedArtifacts)
    tmp = worker_dir() / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    digests: dict[str, str] = {}
    try:
        for name, data in inputs.items():
            digest = hashlib.sha256(data).hexdigest()
            if not store.claim(digest):
                staging = tmp / uuid.uuid4().hex
                staging.write_bytes(data)
                try:
                    store.put(staging)  # claims it
                finally:
                    staging.unlink(missing_ok=True)
            digests[name] = digest
    except BaseException:
        _release(executor, list(digests.values()))
        raise
    return digests


def _take_outputs(executor: LocalExecutor, message: ExitMessage) -> dict[str, bytes]:
    """The outputs' bytes (the stage-out's put claimed each), then those claims dropped."""
    assert executor.artifacts is not None
    outputs = message.get("outputs") or {}
    try:
        return {name: executor.artifacts.path(digest).read_bytes() for name, digest in outputs.items()}
    finally:
        _release(executor, list(outputs.values()))


def _release(executor: LocalExecutor, digests: list[str]) -> None:
    """Drop one claim per digest listed; an artifact no task here claims any more is removed."""
    assert executor.artifacts is not None
    with _lock:
        for digest in digests:
            _refs[digest] -= 1
            if _refs[digest] <= 0:
                del _refs[digest]
                executor.artifacts.path(digest).unlink(missing_ok=True)


# ---- run on the worker by the appliance (Client.run) ----------------------------------------------------------
def kill(key: str, reason: str = "cancelled") -> bool:
    """Kill the attempt ``key`` if it runs here, and remember it so that it never starts here."""
    with _lock:
        _cancelled[key] = reason
        while len(_cancelled) > CANCELLED_REMEMBERED:
            _cancelled.popitem(last=False)
        entry = _running.get(key)
    if entry is not None:
        entry[0].kill(reason)
    return entry is not None


def kill_owned_by(owner: str, reason: str = "the appliance restarted") -> list[str]:
    """An appliance that restarts re-queues every task it had running: the attempts it started before are
    orphans, killed here instead of rendering for nobody."""
    with _lock:
        keys = [key for key, (_, who) in _running.items() if who == owner]
    return [key for key in keys if kill(key, reason)]


def running() -> dict[str, int]:
    """key -> pid of the task's worker process (what the tests look at)."""
    with _lock:
        return {key: handle.pid for key, (handle, _) in _running.items()}


async def gpus() -> list[dict[str, Any]]:
    """This worker's GPUs, for the appliance's GPU grants (a probe may run: off the worker's event loop)."""
    return [g.as_json() for g in await asyncio.to_thread(local_gpus)]


async def mechanism() -> str:
    """The sandbox this worker runs tasks in (starts the zygote: off the worker's event loop)."""
    return await asyncio.to_thread(lambda: local_executor().mechanism)


# ---- dask worker --preload ------------------------------------------------------------------------------------
def dask_setup(worker: Any) -> None:
    """Warm the zygote while the worker connects, so that the first task does not pay for the preload."""
    os.environ.setdefault("APPLIANCE_WORKER_DIR", str(Path(worker.local_directory) / "appliance"))
    threading.Thread(target=local_executor, name="appliance-zygote-start", daemon=True).start()


def dask_teardown(worker: Any) -> None:
    with _lock:
        executor = _executor
    if executor is not None:
        executor.stop()
        shutil.rmtree(worker_dir() / "tmp", ignore_errors=True)
