"""Which ready tasks start now: fit, fair order and reservations, as pure functions of the queue and the box.

No database, no executor, no clock: the scheduler (scheduler.py) reads the ready tasks and what runs, asks
``plan`` what to do with each task, and does it. Order of admission: priority, then round-robin across users
(the user with the fewest running tasks first), then age — one user's 50 queued jobs never block another
user's one job. The first task that does not fit reserves what it needs: later (smaller) tasks only start in
what is left beside that reservation, so a large task cannot wait forever behind a stream of small ones —
capacity drains towards it as running tasks end.

GPUs: a task that needs one is placed on a GPU with a free compute slot whose free memory holds its need (its
input's ``gpu_mem_mb``; resources.GpuPool counts what granted tasks hold). Given the scheduler's pool, the pass
tries each grant on a copy of it, in the order the scheduler then starts the tasks, so what it plans is what the
scheduler grants. The first GPU task that does not fit holds back every later GPU task of the pass (a stream of
small models never starves a large one). A task whose need exceeds every GPU's memory can never start: it is
refused (``gpu_too_small``), as one that needs a GPU on a box without one is (``no_gpu``).
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from appliance.runtime.resources import Capacity, GpuPool
from appliance.store.rows import ReadyTask
from renderers.registry import ENCODES_VIDEO, GPU_OPTIONAL

# A ready task as store.jobs.ready_tasks reads it (rows.py: stdlib only, so admission stays free of the database).
Task = ReadyTask


@dataclass
class Used:
    """What running tasks hold (and, during one admission pass, what reservations set aside)."""
    cpu: float = 0.0
    mem_mb: int = 0
    gpu: int = 0  # GPU compute slots

    def add(self, task: Task, gpu_slots: int | None = None) -> None:
        self.cpu += task["cpu"]
        self.mem_mb += task["mem_mb"]
        self.gpu += gpu_need(task) if gpu_slots is None else gpu_slots


@dataclass
class Running:
    """The running tasks, as admission counts them."""
    used: Used = field(default_factory=Used)
    per_user: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    per_job: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @classmethod
    def of(cls, entries: Iterable[tuple[Task, int]]) -> Running:
        """From (task, GPU compute slots granted) of each running task."""
        running = cls()
        for task, gpu_slots in entries:
            running.used.add(task, gpu_slots)
            running.per_user[task["user_id"]] += 1
            running.per_job[task["job_id"]] += 1
        return running


Decision = Literal["start", "no_gpu", "gpu_too_small"]
# A task input's keys for its GPU (set by the pipelines that plan GPU work, e.g. pipelines/generative.py):
GPU_MEM_KEY = "gpu_mem_mb"  # MB of its card the task's compute needs (a model's weights and activations)
GPU_OPTIONAL_KEY = "gpu_optional"  # true: it uses a free GPU that fits, and runs on the CPU otherwise


class GpuAsk(TypedDict):
    """What a task asks of resources.GpuPool.grant."""
    compute: bool
    optional_compute: bool
    nvenc: bool
    mem_mb: int


def _input(task: Task, task_input: dict[str, Any] | None) -> dict[str, Any]:
    if task_input is not None:
        return task_input
    raw = task.get("input")
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def gpu_mem_need(task: Task, task_input: dict[str, Any] | None = None) -> int:
    """The GPU memory (MB) the task's compute needs; 0 when it did not say (it counts only its slot)."""
    value = _input(task, task_input).get(GPU_MEM_KEY)
    return max(0, int(value)) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def gpu_ask(task: Task, task_input: dict[str, Any] | None = None) -> GpuAsk:
    """The grant a starting task asks for: compute when it needs a GPU, optional compute when its renderer runs
    faster on one or its input says it may use one, an NVENC session when it encodes, and its memory need."""
    data = _input(task, task_input)
    optional = task["renderer"] in GPU_OPTIONAL or data.get(GPU_OPTIONAL_KEY) is True
    return {"compute": bool(task["gpu"]), "optional_compute": optional, "nvenc": task["renderer"] in ENCODES_VIDEO,
            "mem_mb": gpu_mem_need(task, data) if task["gpu"] or optional else 0}


def too_small(task: Task, capacity: Capacity) -> str:
    """The reason a ``gpu_too_small`` task fails: its need and the largest GPU's memory."""
    largest = max((g.memory_mb for g in capacity.gpus if g.compute_slots > 0), default=0)
    return (f"this task needs a GPU with {gpu_mem_need(task)} MB of memory and the largest GPU the appliance can "
            f"grant has {largest} MB")


def gpu_need(task: Task) -> int:
    """A task that asks for a GPU gets one GPU's compute slot (CUDA_VISIBLE_DEVICES names exactly one)."""
    return 1 if task["gpu"] else 0


def fits(task: Task, used: Used, capacity: Capacity) -> bool:
    """Its CPU and memory fit beside what is used, and its GPU slot if it needs one: a GPU task's reservation
    holds back other GPU tasks, never a task that needs no GPU."""
    cpu = min(task["cpu"], capacity.cpu)  # a task larger than the box still runs, alone
    mem = min(task["mem_mb"], capacity.mem_mb)
    gpu = gpu_need(task)
    return (used.cpu + cpu <= capacity.cpu + 1e-9 and used.mem_mb + mem <= capacity.mem_mb
            and (gpu == 0 or used.gpu + gpu <= capacity.gpu_slots))


def fair_order(ready: list[Task], running_per_user: dict[str, int]) -> list[Task]:
    """Priority first; then interleave users, those with fewer running tasks first; then age."""
    queues: dict[tuple[int, str], list[Task]] = defaultdict(list)
    for task in ready:  # ready is already ordered by priority, job age, task index
        queues[(-task["priority"], task["user_id"])].append(task)
    ordered: list[Task] = []
    served: dict[str, int] = defaultdict(int, running_per_user)
    while queues:
        prio = min(k[0] for k in queues)
        users = [k for k in queues if k[0] == prio]
        key = min(users, key=lambda k: (served[k[1]], queues[k][0]["job_created_at"]))
        ordered.append(queues[key].pop(0))
        served[key[1]] += 1
        if not queues[key]:
            del queues[key]
    return ordered


def plan(ready: list[Task], running: Running, capacity: Capacity,
         user_cap: Callable[[str], int | None] = lambda user_id: None,
         gpus: GpuPool | None = None) -> list[tuple[Task, Decision]]:
    """The tasks to start now, in order, and those that can never start (a GPU task on a box without one, or
    one whose GPU memory need no GPU here holds). Tasks over their user's or job's cap are skipped this pass;
    one that does not fit reserves its share. ``gpus``: the scheduler's pool (what granted tasks hold on each
    GPU); without it GPU tasks are counted by compute slots only."""
    used = Used(running.used.cpu, running.used.mem_mb, running.used.gpu)
    per_user, per_job = defaultdict(int, running.per_user), defaultdict(int, running.per_job)
    trial = gpus.copy() if gpus is not None else None
    gpu_waiting = False  # a GPU task did not fit: later GPU tasks of this pass wait behind it
    decisions: list[tuple[Task, Decision]] = []
    for task in fair_order(ready, per_user):
        cap = user_cap(task["user_id"])
        if cap is not None and per_user[task["user_id"]] >= cap:
            continue
        if task["max_parallel"] and per_job[task["job_id"]] >= task["max_parallel"]:
            continue
        if gpu_need(task) > capacity.gpu_slots:  # would wait forever, and its reservation stall all
            decisions.append((task, "no_gpu"))
            continue
        need = gpu_mem_need(task) if task["gpu"] and trial is not None else 0
        if trial is not None and need and not trial.could_ever_hold(need):
            decisions.append((task, "gpu_too_small"))
            continue
        gpu_ok = not task["gpu"] or trial is None or (not gpu_waiting and trial.can_grant(need))
        if not fits(task, used, capacity) or not gpu_ok:
            used.add(task)  # the reservation: nothing later may take this task's share
            gpu_waiting = gpu_waiting or bool(task["gpu"])
            continue
        decisions.append((task, "start"))
        used.add(task)
        per_user[task["user_id"]] += 1
        per_job[task["job_id"]] += 1
        if trial is not None:  # the grant the scheduler will make, so the next task sees what is left
            trial.grant(task["id"], **gpu_ask(task))
    return decisions
