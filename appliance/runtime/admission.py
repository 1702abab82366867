"""Which ready tasks start now: fit, fair order and reservations, as pure functions of the queue and the box.

No database, no executor, no clock: the scheduler (scheduler.py) reads the ready tasks and what runs, asks
``plan`` what to do with each task, and does it. Order of admission: priority, then round-robin across users
(the user with the fewest running tasks first), then age — one user's 50 queued jobs never block another
user's one job. The first task that does not fit reserves what it needs: later (smaller) tasks only start in
what is left beside that reservation, so a large task cannot wait forever behind a stream of small ones —
capacity drains towards it as running tasks end.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from appliance.runtime.resources import Capacity
from appliance.store.rows import ReadyTask

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


Decision = Literal["start", "no_gpu"]


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
         user_cap: Callable[[str], int | None] = lambda user_id: None) -> list[tuple[Task, Decision]]:
    """The tasks to start now, in order, and those that can never start (a GPU task on a box without one).
    Tasks over their user's or job's cap are skipped this pass; one that does not fit reserves its share."""
    used = Used(running.used.cpu, running.used.mem_mb, running.used.gpu)
    per_user, per_job = defaultdict(int, running.per_user), defaultdict(int, running.per_job)
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
        if not fits(task, used, capacity):
            used.add(task)  # the reservation: nothing later may take this task's share
            continue
        decisions.append((task, "start"))
        used.add(task)
        per_user[task["user_id"]] += 1
        per_job[task["job_id"]] += 1
    return decisions
