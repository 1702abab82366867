"""The Dask executor: each task attempt runs on a worker of a Dask cluster, in that worker's own sandbox.

``executor = "dask"`` and ``dask_scheduler = "tcp://host:8786"`` in config. The appliance stays what it is —
the only writer of SQLite, the queue, the credits, the API — and this executor is its client of the cluster:

- ``submit`` ships the task's input artifacts as bytes (inside the task up to 8 MB, else ``Client.scatter``: no
  shared filesystem either way) and submits
  ``dask_worker.run_task`` under the attempt's key (``TaskSpec.key``) with a resource request (``CPU``, ``MEM``
  and, when asked, ``GPU``/``NVENC``) that Dask matches against what each worker declared (``--resources``).
- The worker runs it through its own ``LocalExecutor`` (zygote + sandbox) and streams progress back as events on
  ``dask_worker.TOPIC`` (see that module for why events); they reach ``on_message`` as local progress does.
- The result comes back as bytes; the files are written into a workdir here and taken in by the local
  executor's own stage-out (``LocalExecutor._stage_out``: verified by content, then content-addressed), so a
  remote output is checked exactly as a local one. The task's log is appended to the appliance's log file.
- ``cancel`` runs ``dask_worker.kill`` on every worker (a running function ignores ``Future.cancel``): where the
  attempt runs, the exit message follows its result, i.e. once the remote process was reaped; where it runs
  nowhere yet, the future is cancelled and the exit message follows at once.
- A worker that leaves the cluster while one of our attempts runs there (the scheduler's ``remove-worker``
  event) ends that attempt with ``{"ok": false, "retry": true}``: the scheduler re-queues the task under a new
  attempt and key while ``max_attempts`` allows, as after a crash of the appliance itself.
- Capacity follows the cluster: the sum of the workers' CPU and MEM, refreshed as workers join and leave, and
  the GPUs of the workers that offer ``GPU``/``NVENC`` (each worker's own inventory, ``dask_worker.gpus``,
  trimmed to what it declared). The appliance grants those GPUs with the same ``GpuPool`` as its own, each
  under a cluster-wide number; an attempt granted one is pinned to that GPU's worker (``workers=[address]``)
  and carries the GPU's index there, so the worker needs no pool of its own and a grant never lands on a
  machine without that GPU.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from appliance.errors import one_line
from appliance.runtime import sandbox, tasklog
from appliance.runtime.artifacts import safe_name
from appliance.runtime.executors import dask_worker
from appliance.runtime.executors.base import ExitMessage, Message, OnMessage, TaskSpec, exit_of, progress_of
from appliance.runtime.executors.local import LocalExecutor, Verifier
from appliance.runtime.resources import Capacity, Gpu
from appliance.settings import Settings, SettingsError
from renderers.registry import GPU_OPTIONAL

log = logging.getLogger(__name__)
CAPACITY_REFRESH_S = 10.0
INLINE_INPUTS_MAX = 8 << 20  # bytes of input that travel inside the task itself


class DaskHandle:
    """One attempt on the cluster. ``pid`` is the task's process on its worker (0 until it started there)."""

    def __init__(self, executor: DaskExecutor, spec: TaskSpec, on_message: OnMessage) -> None:
        self.task_id, self.pid = spec.task_id, 0
        self.spec, self.on_message = spec, on_message
        self.worker: str | None = None  # the worker's address, once it reported the start
        self.pinned: str | None = None  # the worker whose GPU it was granted: it runs there or nowhere
        self.future: Any = None
        self.reason: str | None = None  # why it was killed, when it was
        self.ended = False  # the exit message was delivered: nothing more is passed on
        self.lost = False  # its worker left mid-task: ``_lost`` delivers the exit (with retry)
        self.lock = threading.Lock()
        self._executor = executor

    def kill(self, reason: str = "cancelled") -> None:
        self._executor.kill(self, reason)


class DaskExecutor:
    def __init__(self, address: str, *, data_dir: Path, verify: Verifier | None = None,
                 connect_timeout_s: float = 30, cpu_slots: int = 0, memory_mb: int = 0, tls_dir: str = "",
                 worker_caps: tuple[float, int] = (0, 0)) -> None:
        self.address = address
        self._tls_dir = tls_dir
        self._caps = worker_caps  # (CPU, MEM) one worker counts for at most; 0: as declared
        self._root = data_dir
        # Never started: only its stage-out (verify, take in, remove the workdir) is used, so remote outputs are
        # checked by the very code that checks local ones.
        self._stager = LocalExecutor(data_dir=data_dir, verify=verify, preload=())
        self.artifacts = self._stager.artifacts
        self._timeout = connect_timeout_s
        self._overrides = (cpu_slots, memory_mb)
        # Which appliance submitted an attempt: after a restart this one kills the orphans of its previous run.
        self.owner = f"{socket.gethostname()}:{data_dir.resolve()}"
        self.client: Any = None
        self._handles: dict[str, DaskHandle] = {}  # key -> handle
        self._lock = threading.Lock()
        self._mechanism = sandbox.FULL
        self.on_capacity: Callable[[float, int, tuple[Gpu, ...]], None] | None = None  # (cpu, mem_mb, gpus)
        self.gpus: dict[int, Gpu] = {}  # the cluster's GPUs by the appliance's number for them
        self._gpu_numbers: dict[tuple[str, int], int] = {}  # (worker, its GPU index) -> number; never reused
        self._inventories: dict[str, tuple[Gpu, ...]] = {}  # worker -> its GPUs as it reported them
        self._refresh = threading.Event()
        self._stopping = threading.Event()

    @classmethod
    def from_settings(cls, settings: Settings, verify: Verifier | None) -> DaskExecutor:
        if settings.executor != "dask":
            raise SettingsError(f'executor must be "local" or "dask", got {settings.executor!r}')
        if not settings.dask_scheduler:
            raise SettingsError('executor = "dask" needs dask_scheduler, e.g. "tcp://10.0.0.5:8786"')
        return cls(settings.dask_scheduler, data_dir=settings.data_dir, verify=verify,
                   cpu_slots=settings.cpu_slots, memory_mb=settings.memory_mb, tls_dir=settings.dask_tls_dir,
                   worker_caps=(settings.dask_worker_max_cpu, settings.dask_worker_max_mem_mb))

    @property
    def mechanism(self) -> str:
        """The workers' sandbox. Each worker also refuses to run tasks unsandboxed unless *it* allows it."""
        return self._mechanism

    # ---- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        from distributed import Client

        from appliance.cli.cluster import security

        secure = {"security": security(self._tls_dir, "appliance")} if self._tls_dir else {}
        try:
            self.client = Client(self.address, timeout=self._timeout, set_as_default=False,
                                 name=f"appliance {self.owner}", **secure)
        except (OSError, TypeError, ValueError) as exc:  # TypeError: a tls:// address without TLS configured
            raise RuntimeError(f"cannot reach the Dask scheduler at {self.address} (dask_scheduler): "
                               f"{one_line(exc)}") from None
        self.client.subscribe_topic(dask_worker.TOPIC, self._on_task_event)
        self.client.subscribe_topic("all", self._on_cluster_event)
        self.client.run(dask_worker.kill_owned_by, self.owner, on_error="ignore")
        mechanisms = set(self.client.run(dask_worker.mechanism, on_error="ignore").values())
        if mechanisms:
            self._mechanism = mechanisms.pop() if len(mechanisms) == 1 else (
                f"mixed across workers: {'; '.join(sorted(str(m) for m in mechanisms))}")
        self._read_capacity()  # before the scheduler admits anything: a queued GPU task must see the GPUs
        threading.Thread(target=self._capacity_loop, name="dask-capacity", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        self._refresh.set()
        with self._lock:
            handles = list(self._handles.values())
        for handle in handles:
            self._cancel_remote(handle, "executor stopped")
        if self.client is not None:
            self.client.close()

    # ---- the executor seam ----------------------------------------------------------------------------------
    def submit(self, spec: TaskSpec, on_message: OnMessage) -> DaskHandle:
        assert self.client is not None and self.artifacts is not None, "start() first"
        handle = DaskHandle(self, spec, on_message)
        payload = {"key": spec.key, "owner": self.owner, "task_id": spec.task_id, "renderer": spec.renderer,
                   "input": spec.input, "limits": asdict(spec.limits), "attempt": spec.attempt}
        spec, placement = self._place(spec, payload)
        handle.pinned = placement.get("workers", [None])[0]
        inputs = self._ship(spec)
        with self._lock:
            self._handles[spec.key] = handle
        handle.future = self.client.submit(dask_worker.run_task, payload, inputs, key=spec.key, pure=False,
                                           resources=resources_for(spec), **placement)
        handle.future.add_done_callback(lambda future: self._on_done(handle, future))
        return handle

    def _place(self, spec: TaskSpec, payload: dict[str, Any]) -> tuple[TaskSpec, dict[str, Any]]:
        """A GPU grant names a cluster GPU: the attempt goes to its worker, with the GPU's index there in the
        payload. A GPU that has left since the grant: a task that needs one cannot start; one that could only
        use one (NVENC, an optional GPU path) runs without."""
        if spec.gpu is None:
            return spec, {}
        gpu = self.gpus.get(spec.gpu)
        if gpu is None:
            if spec.gpu_compute and spec.renderer not in GPU_OPTIONAL:
                raise RuntimeError(f"the GPU granted (cluster GPU {spec.gpu}) left the cluster with its worker")
            return dataclasses.replace(spec, gpu=None, nvenc=False, gpu_compute=False), {}
        payload.update(gpu=gpu.device, nvenc=spec.nvenc, gpu_compute=spec.gpu_compute)
        return spec, {"workers": [gpu.worker], "allow_other_workers": False}

    def _ship(self, spec: TaskSpec) -> dict[str, Any]:
        """The input files as bytes. Small inputs travel inside the task (held by the scheduler, so no worker's
        death can lose them); larger ones are scattered to a worker and fetched from there by the task's."""
        assert self.artifacts is not None
        paths = {name: self.artifacts.path(digest) for name, digest in spec.inputs.items()}
        if sum(path.stat().st_size for path in paths.values()) <= INLINE_INPUTS_MAX:
            return {name: path.read_bytes() for name, path in paths.items()}
        return {name: self.client.scatter(path.read_bytes(), hash=False) for name, path in paths.items()}

    def cancel(self, task_id: str, reason: str = "cancelled") -> None:
        with self._lock:
            handles = [h for h in self._handles.values() if h.task_id == task_id]
        for handle in handles:
            handle.kill(reason)

    def kill(self, handle: DaskHandle, reason: str) -> None:
        """Safe on the event loop: the remote kill runs on a thread of its own."""
        with handle.lock:
            if handle.ended or handle.reason is not None:
                return
            handle.reason = reason
        threading.Thread(target=self._cancel_then_exit, args=(handle, reason), daemon=True,
                         name=f"dask-cancel-{handle.task_id}").start()

    def _cancel_then_exit(self, handle: DaskHandle, reason: str) -> None:
        """Where the attempt runs, its worker kills it and the future completes once the process is reaped:
        ``_finish`` then delivers the exit, so an exit after a cancel means the remote process is gone. An
        attempt that runs nowhere yet is cancelled on the scheduler and ends here."""
        if not self._kill_remote(handle, reason):
            self._cancel_future(handle)
            self._exit(handle, {"type": "exit", "ok": False, "error": reason})

    def _cancel_remote(self, handle: DaskHandle, reason: str) -> None:
        self._cancel_future(handle)  # first: once cancelled on the scheduler, it can start nowhere new
        self._kill_remote(handle, reason)

    def _cancel_future(self, handle: DaskHandle) -> None:
        future = handle.future
        try:
            if future is not None:
                future.cancel()
        except Exception as exc:  # noqa: BLE001 - the scheduler unreachable: nothing more can be done from here
            log.warning("could not cancel %s on the cluster: %s", handle.spec.key, one_line(exc))

    def _kill_remote(self, handle: DaskHandle, reason: str) -> bool:
        """``dask_worker.kill`` on every worker, which also keeps the attempt from starting there later;
        True when one of them was running it."""
        try:
            answers = self.client.run(dask_worker.kill, handle.spec.key, reason, on_error="ignore")
        except Exception as exc:  # noqa: BLE001
            log.warning("could not kill %s on the cluster: %s", handle.spec.key, one_line(exc))
            return False
        return any(answer is True for answer in answers.values())

    # ---- what comes back ------------------------------------------------------------------------------------
    def _on_task_event(self, event: tuple[float, dict[str, Any]]) -> None:
        """On the client's event loop: progress and start reports of our attempts (events of an attempt that
        ended, or of another appliance, are dropped)."""
        msg = event[1]
        with self._lock:
            handle = self._handles.get(msg.get("key", ""))
        if handle is None:
            return
        if msg.get("type") == "started":
            handle.worker, handle.pid = msg.get("worker"), int(msg.get("pid") or 0)
        elif msg.get("type") == "message" and isinstance(msg.get("message"), dict):
            # only progress travels as an event; an attempt's end is its future's result, verified in _take_in
            # (an "exit" sent as an event by a rogue worker would otherwise end the attempt with its outputs)
            progress = progress_of(msg["message"]) if msg["message"].get("type") == "progress" else None
            with handle.lock:
                if not handle.ended and progress is not None:
                    _deliver(handle, progress)

    def _on_cluster_event(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        if not isinstance(msg, dict) or msg.get("action") not in ("add-worker", "remove-worker"):
            return
        self._refresh.set()
        if msg["action"] == "remove-worker":
            # Ours that ran there, or were handed to it (the start report may have died with the worker; with
            # Dask's queuing a task reaches a worker only when a thread there is free to run it).
            gone, assigned = msg.get("worker"), set(msg.get("processing-tasks") or ())
            with self._lock:  # and those pinned to it (a GPU grant), which could now run nowhere
                lost = [h for h in self._handles.values()
                        if gone in (h.worker, h.pinned) or h.spec.key in assigned]
            for handle in lost:
                threading.Thread(target=self._lost, args=(handle, gone), daemon=True).start()

    def _lost(self, handle: DaskHandle, worker: str) -> None:
        """The worker died (or left) mid-task: this attempt is over; the scheduler decides on a retry."""
        with handle.lock:
            if handle.ended:
                return
            reason, handle.reason = handle.reason, handle.reason or "worker lost"
            handle.lost = reason is None
        if reason is not None:  # it was being cancelled: that is over now, and no retry is wanted
            self._exit(handle, {"type": "exit", "ok": False, "error": reason})
            return
        self._cancel_remote(handle, "worker lost")  # Dask would otherwise re-run the same key elsewhere
        self._exit(handle, {"type": "exit", "ok": False, "retry": True,
                            "error": f"worker lost: {worker} left the cluster while the task ran there"})

    def _on_done(self, handle: DaskHandle, future: Any) -> None:
        # Dask runs done-callbacks one at a time on a single thread: fetching and verifying happen on our own.
        threading.Thread(target=self._finish, args=(handle, future), daemon=True,
                         name=f"dask-done-{handle.task_id}").start()

    def _finish(self, handle: DaskHandle, future: Any) -> None:
        if handle.ended or handle.lost:
            return
        message: ExitMessage
        try:
            if handle.reason is not None:  # killed: the process is gone now, whatever the worker reported
                message = {"type": "exit", "ok": False, "error": handle.reason}
            elif future.status == "cancelled":  # not by us: the client lost the scheduler (and its futures)
                self._kill_remote(handle, "the Dask scheduler lost the task")  # it may still run somewhere
                message = {"type": "exit", "ok": False, "retry": True, "error": "the Dask scheduler lost the task"}
            elif future.status == "error":
                message = {"type": "exit", "ok": False, "error": f"dask: {one_line(future.exception())}"}
            else:
                message = self._take_in(handle, future.result(), self._holders(future))
        except Exception as exc:  # never leave the scheduler without its exit message
            log.exception("finishing %s failed", handle.spec.key)
            message = {"type": "exit", "ok": False, "error": f"executor error: {one_line(exc)}"}
        self._exit(handle, message)

    def _holders(self, future: Any) -> set[str]:
        """The workers the scheduler says hold the attempt's result: where it ran (not what the result claims)."""
        try:
            return set(self.client.who_has(future).get(future.key, ()))
        except Exception as exc:  # noqa: BLE001 - unknown holder: the result is refused below
            log.warning("who_has(%s) failed: %s", future.key, one_line(exc))
            return set()

    def _take_in(self, handle: DaskHandle, out: dict[str, Any], holders: set[str]) -> ExitMessage:
        """The worker's files into a workdir here, then the local stage-out: verify, take in, drop the workdir.
        Only a result from the worker the scheduler ran it on (the one it was pinned to, for a GPU grant) is
        taken; a result that names another worker is refused, as a forged one."""
        spec = handle.spec
        claimed = out.get("worker")
        if claimed not in holders or (handle.pinned and claimed != handle.pinned):
            return {"type": "exit", "ok": False, "error": f"result refused: it names worker {claimed!r}, the "
                    f"scheduler ran the attempt on {sorted(holders) or 'no worker'}"}
        handle.worker = claimed
        self._append_log(spec.task_id, out.get("log") or b"")
        # only the fields an exit may carry, each checked; the worker's digests are not among them (ours are
        # computed from the bytes)
        message = exit_of(out["exit"] if isinstance(out.get("exit"), dict) else {})
        if not message["ok"]:
            return message
        workdir = self._root / "work" / spec.task_id
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        try:
            for name, data in (out.get("files") or {}).items():
                (workdir / safe_name(name)).write_bytes(data)
        except (OSError, ValueError) as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            return {"type": "exit", "ok": False, "error": f"renderer output unusable: {one_line(exc)}"}
        message["result"] = {**message["result"], "worker": handle.worker}
        return self._stager._stage_out(spec, workdir, message)

    def _append_log(self, task_id: str, data: bytes) -> None:
        path = self._root / "logs" / f"{task_id}.log"
        data = data[:tasklog.HEAD] + b"\n[executor] the worker's log was cut\n" + data[-tasklog.TAIL:] \
            if len(data) > tasklog.HEAD + tasklog.TAIL else data
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as f:
                f.write(data)

    def _exit(self, handle: DaskHandle, message: ExitMessage) -> None:
        with handle.lock:
            if handle.ended:
                return
            handle.ended = True
            with self._lock:
                self._handles.pop(handle.spec.key, None)
            handle.future = None  # releases the scattered inputs and the result on the cluster
            _deliver(handle, message)

    # ---- capacity -------------------------------------------------------------------------------------------
    def _capacity_loop(self) -> None:
        while not self._stopping.is_set():
            self._refresh.wait(CAPACITY_REFRESH_S)
            self._refresh.clear()
            self._read_capacity()

    def _read_capacity(self) -> None:
        try:
            cpu, mem, gpus = self.cluster_resources()
            if self.on_capacity is not None:
                self.on_capacity(float(self._overrides[0] or cpu), int(self._overrides[1] or mem), gpus)
        except Exception as exc:  # noqa: BLE001 - the next refresh tries again
            log.warning("could not read the cluster's capacity: %s", one_line(exc))

    def cluster_resources(self) -> tuple[float, int, tuple[Gpu, ...]]:
        """Sum of CPU and MEM the workers declared, and the GPUs of those that declared GPU or NVENC."""
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        declared = {address: w.get("resources", {}) for address, w in workers.items()}
        cap_cpu, cap_mem = self._caps
        cpu = sum(_capped(float(r.get("CPU", 0)), cap_cpu) for r in declared.values())
        mem = sum(int(_capped(int(r.get("MEM", 0)), cap_mem)) for r in declared.values())
        with_gpus = sorted(a for a, r in declared.items() if r.get("GPU", 0) > 0 or r.get("NVENC", 0) > 0)
        unknown = [a for a in with_gpus if a not in self._inventories]
        if unknown:
            answers = self.client.run(dask_worker.gpus, workers=unknown, on_error="return")
            for address, listed in answers.items():
                try:  # a worker that fails to say (or says nonsense) is asked again on the next refresh
                    self._inventories[address] = tuple(Gpu.from_json(g) for g in listed)
                except (TypeError, KeyError, ValueError) as exc:
                    log.warning("worker %s did not list its GPUs: %s", address, one_line(exc))
        for address in set(self._inventories) - set(with_gpus):
            del self._inventories[address]
        gpus = cluster_gpus({a: declared[a] for a in with_gpus if a in self._inventories}, self._inventories,
                            self._gpu_numbers)
        self.gpus = {g.index: g for g in gpus}
        return cpu, mem, gpus


def _capped(value: float, cap: float) -> float:
    """What a worker's declaration counts for: never more than the operator's cap (a worker says what it likes)."""
    return min(value, cap) if cap > 0 else value


def resources_for(spec: TaskSpec) -> dict[str, float]:
    """What the attempt asks of a worker: its CPU share and memory, and a GPU compute slot / an NVENC session
    when the scheduler granted one (Dask then also holds the worker to what it declared)."""
    wanted = {"CPU": spec.limits.cpu, "MEM": float(spec.mem_mb or spec.limits.mem_mb)}
    if spec.gpu is not None and spec.gpu_compute:
        wanted["GPU"] = 1.0
    if spec.gpu is not None and spec.nvenc:
        wanted["NVENC"] = 1.0
    return wanted


def cluster_gpus(declared: dict[str, dict[str, Any]], inventories: dict[str, tuple[Gpu, ...]],
                 numbers: dict[tuple[str, int], int]) -> tuple[Gpu, ...]:
    """The workers' GPUs under the appliance's numbers, each worker's trimmed to the ``GPU`` (compute slots)
    and ``NVENC`` (sessions) it declared: a worker offers no more than it said, and nothing it did not say.
    ``numbers`` keeps each (worker, GPU) its number for as long as the appliance runs, new ones counting on."""
    gpus = []
    for address in sorted(declared):
        compute, sessions = int(declared[address].get("GPU", 0)), int(declared[address].get("NVENC", 0))
        for gpu in inventories.get(address, ()):
            number = numbers.setdefault((address, gpu.index), len(numbers))
            slots, nvenc = min(gpu.compute_slots, compute), min(gpu.nvenc_sessions, sessions)
            compute, sessions = compute - slots, sessions - nvenc
            gpus.append(dataclasses.replace(gpu, index=number, worker=address, local_index=gpu.index,
                                            compute_slots=slots, nvenc_sessions=nvenc))
    return tuple(gpus)


def _deliver(handle: DaskHandle, message: Message) -> None:
    try:
        handle.on_message(message)
    except Exception:  # a broken callback must not break the client's event loop
        log.exception("on_message failed for task %s", handle.task_id)


def follow_capacity(current: Callable[[], Capacity], set_capacity: Callable[[Capacity], None],
                    loop: asyncio.AbstractEventLoop) -> Callable[[float, int, tuple[Gpu, ...]], None]:
    """A callback for ``on_capacity``: the appliance admits tasks against the cluster's CPU, MEM (config's
    cpu_slots/memory_mb still override) and GPUs, handed to ``set_capacity`` (the scheduler's, its one owner) on
    the event loop where the scheduler reads it."""
    def swap(cpu: float, mem_mb: int, gpus: tuple[Gpu, ...]) -> None:
        now = current()
        if cpu <= 0 or mem_mb <= 0:  # a cluster without workers (yet) keeps the last CPU and MEM figures
            cpu, mem_mb = now.cpu, now.mem_mb
        set_capacity(dataclasses.replace(now, cpu=cpu, mem_mb=mem_mb, gpus=gpus))

    def on_capacity(cpu: float, mem_mb: int, gpus: tuple[Gpu, ...]) -> None:
        loop.call_soon_threadsafe(swap, cpu, mem_mb, gpus)

    return on_capacity
