"""Admission (issue #20 item 4): fit, fair order and reservations as pure functions — no server, no database."""
from __future__ import annotations

from appliance.runtime.admission import Running, fair_order, plan
from appliance.runtime.resources import Capacity, Gpu

BOX = Capacity(cpu=4, mem_mb=8000)


def task(user: str, n: int, *, cpu: float = 1, mem: int = 1000, prio: int = 0, gpu: int = 0, job: str | None = None,
         max_parallel: int | None = None) -> dict:
    return {"id": f"{user}{n}", "user_id": user, "job_id": job or f"job-{user}{n}", "priority": prio, "cpu": cpu,
            "mem_mb": mem, "gpu": gpu, "max_parallel": max_parallel, "job_created_at": f"2026-01-01T00:00:{n:02d}.000Z"}


def started(decisions) -> list[str]:
    return [t["id"] for t, d in decisions if d == "start"]


def test_fair_order_interleaves_users_and_respects_priority():
    ready = [task("a", i) for i in range(5)] + [task("b", 10), task("c", 20, prio=5)]
    order = [t["id"] for t in fair_order(ready, {"a": 1})]
    assert order[0] == "c20"  # priority first
    assert order[1] == "b10"  # then the user with fewer running tasks
    assert order[2:] == ["a0", "a1", "a2", "a3", "a4"]


def test_what_fits_starts_and_nothing_more():
    ready = [task("a", i) for i in range(6)]
    assert started(plan(ready, Running(), BOX)) == ["a0", "a1", "a2", "a3"]  # 4 CPU slots
    running = Running.of([(task("b", 50, cpu=3), 0)])
    assert started(plan(ready, running, BOX)) == ["a0"]  # 3 held already
    assert started(plan([task("a", 1, mem=9000)], Running(), BOX)) == ["a1"]  # larger than the box: runs alone


def test_a_large_task_reserves_its_share_so_small_ones_cannot_starve_it():
    running = Running.of([(task("x", 40, cpu=2), 0)])
    big, small = task("a", 1, cpu=4), [task("b", 10 + i) for i in range(3)]
    # the big task does not fit beside the running 2; it reserves 4, so no small task starts in the 2 left
    assert started(plan([big, *small], running, BOX)) == []
    # without it, the small ones take the 2 free slots
    assert started(plan(small, running, BOX)) == ["b10", "b11"]


def test_caps_per_user_and_per_job():
    ready = [task("a", i, job="j1", max_parallel=2) for i in range(4)] + [task("b", 10), task("b", 11)]
    assert started(plan(ready, Running(), Capacity(cpu=16, mem_mb=64000))) == ["a0", "b10", "a1", "b11"]
    capped = plan(ready, Running(), Capacity(cpu=16, mem_mb=64000), user_cap=lambda user: 1)
    assert started(capped) == ["a0", "b10"]


def test_a_gpu_task_without_a_gpu_is_refused_not_queued_for_ever():
    decisions = plan([task("a", 1, gpu=1), task("a", 2)], Running(), BOX)
    assert [(t["id"], d) for t, d in decisions] == [("a1", "no_gpu"), ("a2", "start")]
    gpu_box = Capacity(cpu=4, mem_mb=8000, gpus=(Gpu(index=0, name="test", memory_mb=8000, compute_slots=1),))
    held = Running.of([(task("x", 40, gpu=1), 1)])
    assert started(plan([task("a", 1, gpu=1), task("a", 2)], held, gpu_box)) == ["a2"]  # slot busy: waits
    assert started(plan([task("a", 1, gpu=1)], Running(), gpu_box)) == ["a1"]
