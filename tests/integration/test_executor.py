"""The executor with real processes: a real zygote, real forks, real signals, real rlimits (no mocks)."""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance.runtime import sandbox
from appliance.runtime.executors.local import Limits, LocalExecutor, LocalRun, TaskHandle


class Collector:
    """The on_message callback: records messages, remembers when the first arrived, signals the exit."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.first_at: float | None = None
        self.exited = threading.Event()

    def __call__(self, message: dict) -> None:
        self.first_at = self.first_at or time.perf_counter()
        self.messages.append(message)
        if message["type"] == "exit":
            self.exited.set()

    def wait(self, timeout: float = 60) -> dict:
        assert self.exited.wait(timeout), f"no exit message; got {self.messages}"
        time.sleep(0.05)  # a second exit message would arrive now
        exits = [m for m in self.messages if m["type"] == "exit"]
        assert len(exits) == 1 and self.messages[-1] is exits[0], self.messages
        return exits[0]

    def logs(self) -> list[str]:
        return [m["text"] for m in self.messages if m["type"] == "log"]


def spawn(executor: LocalExecutor, workdir: Path, renderer: str, task_input: dict | None = None,
          **limits) -> tuple[TaskHandle, Collector]:
    collector = Collector()
    spec = LocalRun(task_id=workdir.name, renderer=renderer, input=task_input or {}, workdir=workdir,
                    log_path=workdir.parent / f"{workdir.name}.log", limits=Limits(**{"wall_seconds": 60, **limits}))
    return executor.spawn(spec, collector), collector


def run(executor: LocalExecutor, workdir: Path, renderer: str, task_input: dict | None = None, **limits) -> dict:
    return spawn(executor, workdir, renderer, task_input, **limits)[1].wait()


def gone(pid: int, timeout: float = 3.0, group: bool = False) -> bool:
    """True once the process (or process group) no longer exists; zombies are reaped by the zygote."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0) if group else os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def child_pid(collector: Collector, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in collector.logs():
            if line.startswith("child pid "):
                return int(line.split()[-1])
        time.sleep(0.02)
    raise AssertionError(f"the task did not report its child: {collector.messages}")


@pytest.fixture(scope="module")
def executor():
    ex = LocalExecutor()  # the production preload: numpy, PIL, manim
    ex.start()
    yield ex
    ex.stop()


@pytest.fixture
def light_executor():
    """A separate executor the test may break or stop; no preload, so it starts fast."""
    ex = LocalExecutor(preload=())
    ex.start()
    yield ex
    ex.stop()


def test_noop_returns_its_result_and_writes_its_file(executor, tmp_path):
    result = run(executor, tmp_path / "w", "test.noop")
    assert result["ok"] is True, result
    assert result["result"]["files"] == {"out": "out.txt"}
    assert (tmp_path / "w" / "out.txt").read_text() == "noop\n"


def test_progress_arrives_in_order_before_the_single_exit(executor, tmp_path):
    handle, collector = spawn(executor, tmp_path / "w", "test.sleep", {"seconds": 0.5})
    assert handle.pid > 0 and handle.task_id == "w"
    assert collector.wait()["ok"] is True
    fractions = [m["fraction"] for m in collector.messages if m["type"] == "progress"]
    # 5 steps 0.1 s apart; the executor coalesces progress (at most one per 0.1 s, the latest wins, the last
    # one always arrives), so 2 to 5 of them reach the caller, in order
    assert 2 <= len(fractions) <= 5 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {m["phase"] for m in collector.messages if m["type"] == "progress"} == {"sleeping"}


@pytest.mark.skipif(os.geteuid() != 0, reason="the early finish needs the task's PID namespace: root only")
def test_a_result_finishes_on_the_workers_word_a_failure_on_the_zygotes_report(executor, tmp_path):
    """After a result the worker says the task's processes are gone ("ended") and the handle finishes on that,
    without waiting for the worker's reaping; a crash always waits for the zygote's report (the signal's cause)."""
    handle, collector = spawn(executor, tmp_path / "ok", "test.noop")
    assert collector.wait()["ok"] is True
    assert handle._ended is not None and handle._ended["status"] == 0
    handle, collector = spawn(executor, tmp_path / "crash", "test.crash", {"signal": "SIGSEGV"})
    assert collector.wait()["error"] == "worker crashed (SIGSEGV)"
    assert handle._ended is None and handle._exit is not None


def test_death_by_signal_is_a_readable_crash(executor, tmp_path):
    result = run(executor, tmp_path / "w", "test.crash", {"signal": "SIGSEGV"})
    assert result == {"type": "exit", "ok": False, "error": "worker crashed (SIGSEGV)", "usage": result["usage"]}


def test_exit_without_a_result_says_so(executor, tmp_path):
    result = run(executor, tmp_path / "w", "test.crash", {"exit_code": 3})
    assert result["error"] == "worker exited with status 3 without a result"


def test_render_error_message_passes_through(executor, tmp_path):
    result = run(executor, tmp_path / "w", "test.fail", {"message": "the scene has no construct()"})
    assert result["ok"] is False and result["error"] == "the scene has no construct()"


def test_unexpected_exception_is_one_line_with_the_traceback_in_the_log(executor, tmp_path):
    result = run(executor, tmp_path / "w", "test.crash", {"exception": "boom"})
    assert result["error"] == "RuntimeError: boom"
    log = (tmp_path / "w.log").read_text()
    assert "Traceback (most recent call last)" in log and 'raise RuntimeError' in log


def test_unknown_renderer_fails_cleanly(executor, tmp_path):
    result = run(executor, tmp_path / "w", "test.nope")
    assert result["ok"] is False and "unknown renderer 'test.nope'" in result["error"]


def test_wall_clock_timeout_kills_the_process_group(executor, tmp_path):
    started = time.monotonic()
    handle, collector = spawn(executor, tmp_path / "w", "test.sleep", {"seconds": 10}, wall_seconds=1)
    assert collector.wait()["error"] == "timed out after 1 s"
    assert time.monotonic() - started < 5
    assert gone(handle.pid, group=True)


def test_kill_takes_the_grandchildren_with_it(executor, tmp_path):
    from tests.integration.test_sandbox_hardening import host_pid, logged_child

    handle, collector = spawn(executor, tmp_path / "w", "test.sleep", {"seconds": 30, "child": True})
    grandchild = logged_child(tmp_path / "w.log", collector)
    if executor.mechanism == sandbox.FULL:  # the task logged its pid inside its own PID namespace
        grandchild = host_pid(handle.pid, grandchild)
    handle.kill()
    assert collector.wait()["error"] == "cancelled"
    assert gone(grandchild) and gone(handle.pid, group=True)
    handle.kill("again")  # after the exit: harmless, and no second exit message
    assert collector.wait()["error"] == "cancelled"


def test_memory_hog_fails_while_a_concurrent_task_completes(executor, tmp_path):
    _, neighbour = spawn(executor, tmp_path / "n", "test.sleep", {"seconds": 0.5})
    hog = run(executor, tmp_path / "w", "test.memhog", {"mb": 600}, mem_mb=256)
    assert hog["ok"] is False and hog["error"] == "out of memory (limit 256 MB)", hog
    assert neighbour.wait()["ok"] is True


def test_cpu_spinner_is_stopped_at_its_cpu_limit(executor, tmp_path):
    started = time.monotonic()
    result = run(executor, tmp_path / "w", "test.spin", {"seconds": 30}, cpu_seconds=1)
    assert result["error"] == "cpu time limit exceeded (limit 1 s)"
    assert time.monotonic() - started < 15


def test_warm_spawn_reaches_the_first_message_fast(executor, tmp_path):
    latencies = []
    for n in range(15):
        started = time.perf_counter()
        _, collector = spawn(executor, tmp_path / f"w{n}", "test.noop")
        assert collector.wait()["ok"] is True
        latencies.append(collector.first_at - started)
    p50, worst = statistics.median(latencies), max(latencies)
    print(f"\nspawn -> first message of a noop: p50 {p50 * 1000:.1f} ms, max {worst * 1000:.1f} ms"
          f" ({executor.mechanism})")


def test_preloaded_manim_costs_a_task_nothing(executor, tmp_path):
    code = "import time; t = time.perf_counter(); import manim; print(time.perf_counter() - t)"
    cold = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                cwd=tmp_path).stdout)
    result = run(executor, tmp_path / "w", "test.noop", {"imports": ["manim"]})
    warm = result["result"]["meta"]["import_s"]["manim"]
    print(f"\nimport manim: {cold:.3f} s in a fresh interpreter, {warm:.4f} s in a task (preloaded)")
    assert warm < cold


def test_a_dead_zygote_fails_its_running_tasks_and_is_restarted(light_executor, tmp_path):
    handle, collector = spawn(light_executor, tmp_path / "w", "test.sleep", {"seconds": 30})
    deadline = time.monotonic() + 10
    while not collector.messages and time.monotonic() < deadline:  # the worker is set up and running
        time.sleep(0.02)
    os.kill(light_executor.zygote_pid, signal.SIGKILL)
    lost = collector.wait()
    assert lost["error"] == "worker lost: the zygote process died" and lost["retry"] is True  # not the task's fault
    assert gone(handle.pid)  # parent-death signal
    assert run(light_executor, tmp_path / "after", "test.noop")["ok"] is True


def test_stop_kills_running_tasks_and_the_zygote(light_executor, tmp_path):
    handle, collector = spawn(light_executor, tmp_path / "w", "test.sleep", {"seconds": 30})
    zygote = light_executor.zygote_pid
    light_executor.stop()
    assert collector.wait(10)["error"] == "executor stopped"
    assert gone(handle.pid, group=True) and gone(zygote)


def test_without_the_sandbox_limits_still_apply(tmp_path):
    ex = LocalExecutor(preload=(), sandbox=False)
    ex.start()
    try:
        assert ex.mechanism == sandbox.DISABLED
        assert run(ex, tmp_path / "ok", "test.noop")["ok"] is True
        assert run(ex, tmp_path / "hog", "test.memhog", {"mb": 600}, mem_mb=256)["error"].startswith("out of memory")
    finally:
        ex.stop()


def test_kill_right_after_spawn_is_not_lost(executor, tmp_path):
    handle, collector = spawn(executor, tmp_path / "w", "test.sleep", {"seconds": 30})
    handle.kill()
    assert collector.wait(10)["error"] == "cancelled"
