"""Each task's own filesystem (issue #17 items 3 and 9; appliance/runtime/sandbox/taskfs.py): the kernel enforces
its blocks and inodes, every exit path leaves no loop device behind, and the task sees its workdir as /task with
no host path of the workdir or the data dir in its cwd, environment or mountinfo. Real tasks in the real sandbox
(the ``test.hostile`` and ``test.noop`` renderers), loop devices counted with ``losetup -a``."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from appliance.runtime.executors.base import TaskSpec
from appliance.runtime.executors.local import LocalExecutor
from appliance.runtime.sandbox import Limits, taskfs
from appliance.runtime.sandbox.probe import disk_layer, layers_here, taskfs_here
from tests.conftest import ROOT
from tests.integration.test_executor import run, spawn

pytestmark = pytest.mark.skipif(taskfs.unavailable() is not None or taskfs_here() is not None,
                                reason=f"no per-task filesystem here: {taskfs.unavailable()}")


@pytest.fixture(scope="module")
def executor():
    ex = LocalExecutor(preload=("numpy", "PIL"))
    ex.start()
    yield ex
    ex.stop()


def loops(under: Path) -> list[str]:
    """The loop devices whose (unnamed) image lies in ``under``: a task's image is an O_TMPFILE in its work root."""
    listing = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    return [line for line in listing.splitlines() if f"({under}/#" in line]


def until_no_loops(under: Path, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := loops(under)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def exec_outcome(executor: LocalExecutor, workdir: Path, script: str, **limits) -> dict:
    result = run(executor, workdir, "test.hostile", {"action": "exec", "timeout": 60,
                                                     "argv": [sys.executable, "-c", script]}, **limits)
    return result


# ---- item 9: no host path inside ----------------------------------------------------------------------------------
def test_the_task_sees_task_and_no_host_path_of_its_workdir_or_the_data_dir(tmp_path):
    data_dir = tmp_path / "secret-data-dir"
    ex = LocalExecutor(preload=("PIL",), data_dir=data_dir)
    ex.start()
    try:
        (tmp_path / "in.txt").write_text("staged input\n")
        digest = ex.artifacts.put(tmp_path / "in.txt")
        done, exits = threading.Event(), []

        def on_message(message: dict) -> None:
            if message.get("type") == "exit":
                exits.append(message)
                done.set()
        script = ("pwd; readlink /proc/self/cwd; echo HOME=$HOME; cat /proc/self/mountinfo /etc/passwd; env; "
                  "cat in.txt; ls -la /task")
        ex.submit(TaskSpec(task_id="paths", renderer="test.hostile", inputs={"in.txt": digest},
                           input={"action": "exec", "argv": ["sh", "-c", script]},
                           limits=Limits(wall_seconds=60)), on_message)
        assert done.wait(60)
    finally:
        ex.stop()
    assert exits[0]["ok"], exits
    outcome = exits[0]["result"]["meta"]["outcome"]
    out = outcome["stdout"]
    assert out.splitlines()[:3] == ["/task", "/task", "HOME=/task"], out
    assert "staged input" in out
    assert str(data_dir) not in out and str(tmp_path) not in out and "secret-data-dir" not in out, out
    assert " /task rw,nosuid,nodev,noexec" in out and "- ext4 /dev/loop" in out, out


# ---- item 3: hostile disk use, contained by the kernel --------------------------------------------------------
FALLOCATE = ("import os, time\nfd = os.open('big', os.O_RDWR | os.O_CREAT)\ntry:\n"
             "    os.posix_fallocate(fd, 0, 256 << 20)\nexcept OSError as exc:\n    print(exc)\n"
             "print('held', os.fstat(fd).st_blocks * 512)\ntime.sleep(3)")
SPARSE_SPREAD = ("import os, time\nfd = os.open('sparse', os.O_RDWR | os.O_CREAT)\n"
                 "os.ftruncate(fd, 2 << 30)\ntry:\n    for i in range(64):\n"
                 "        os.pwrite(fd, b'x' * (1 << 20), i * (32 << 20))\n"
                 "except OSError as exc:\n    print(exc)\ntime.sleep(3)")


@pytest.mark.parametrize("script, error", [
    (FALLOCATE, "disk quota exceeded (limit 16 MB)"),
    (SPARSE_SPREAD, "disk quota exceeded (limit 16 MB)"),
], ids=["fallocate", "sparse-writes-spread-out"])
def test_disk_use_past_the_quota_is_stopped_by_the_kernel_and_named(executor, tmp_path, script, error):
    result = exec_outcome(executor, tmp_path / "w", script, disk_mb=16)
    if result["ok"]:  # the exec action reports a failed script as its outcome
        outcome = result["result"]["meta"]["outcome"]
        assert "No space left on device" in outcome["stderr"], outcome
        pytest.fail(f"the task completed: {outcome}")
    assert result["error"].startswith(error), result
    assert not loops(tmp_path) or until_no_loops(tmp_path) == []


def test_a_sparse_file_of_huge_apparent_size_costs_only_its_blocks(executor, tmp_path):
    script = ("import os\nfd = os.open('sparse', os.O_RDWR | os.O_CREAT)\nos.ftruncate(fd, 3 << 30)\n"
              "os.pwrite(fd, b'end', (3 << 30) - 3)\nst = os.fstat(fd)\nprint(st.st_size, st.st_blocks * 512)")
    result = exec_outcome(executor, tmp_path / "w", script, disk_mb=16)
    assert result["ok"], result
    size, allocated = map(int, result["result"]["meta"]["outcome"]["stdout"].split())
    assert size == 3 << 30 and allocated <= 1 << 20
    # copied back out of the task's filesystem hole for hole: 3 GB of zeros are neither written nor read
    host = os.stat(tmp_path / "w" / "sparse")
    assert host.st_size == 3 << 30 and host.st_blocks * 512 <= 1 << 20, host


def test_a_symlink_out_is_refused_and_nothing_of_the_host_is_copied(executor, tmp_path):
    result = run(executor, tmp_path / "w", "test.noop", {"symlink_to": "/etc/shadow"})
    assert result["ok"] is False and result["error"] == "renderer output out.txt is a symbolic link", result
    assert not (tmp_path / "w" / "out.txt").exists()


def test_a_full_task_leaves_another_tasks_disk_alone(executor, tmp_path):
    filler, filled = spawn(executor, tmp_path / "a", "test.hostile", {"action": "fill", "mb": 200}, disk_mb=16)
    other = run(executor, tmp_path / "b", "test.hostile", {"action": "fill", "mb": 40, "path": "ok.bin"}, disk_mb=64)
    assert filled.wait()["error"] == "disk quota exceeded (limit 16 MB)"
    assert other["ok"] is True, other
    assert (tmp_path / "b" / "ok.bin").stat().st_size == 40 << 20  # a bare run's files come back


def test_inputs_are_read_only_and_cost_no_quota(executor, tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "small.bin").write_bytes(b"s" * (3 << 20))
    (tmp_path / "w" / "large.bin").write_bytes(b"L" * (taskfs.COPY_MAX + 1))
    script = ("import os\nfor name in ('small.bin', 'large.bin'):\n    print(name, os.path.getsize(name))\n"
              "    try:\n        open(name, 'ab').write(b'x')\n    except OSError as exc:\n        print(exc.errno)\n")
    result = exec_outcome(executor, tmp_path / "w", script, disk_mb=16)
    assert result["ok"], result
    lines = result["result"]["meta"]["outcome"]["stdout"].split()
    # EACCES: a copy owned by root, or the host's file bound read-only (EROFS behind it)
    assert lines == ["small.bin", str(3 << 20), "13", "large.bin", str(taskfs.COPY_MAX + 1), "13"], lines
    assert (tmp_path / "w" / "large.bin").read_bytes()[-1:] == b"L"


def test_the_live_preview_reaches_the_host_workdir_while_the_task_runs(executor, tmp_path):
    script = "printf '\\377\\330\\377frame-one' > preview.jpg.tmp && mv preview.jpg.tmp preview.jpg && sleep 3"
    handle, collector = spawn(executor, tmp_path / "w", "test.hostile",
                              {"action": "exec", "argv": ["sh", "-c", script]})
    preview = tmp_path / "w" / "preview.jpg"
    deadline = time.monotonic() + 10
    while not preview.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not collector.exited.is_set(), collector.messages  # seen while the task ran
    assert preview.read_bytes() == b"\xff\xd8\xffframe-one"
    assert collector.wait()["ok"]


# ---- every exit path detaches its loop device ---------------------------------------------------------------------
def test_every_exit_path_leaves_no_loop_device(tmp_path):
    ex = LocalExecutor(preload=("PIL",))
    ex.start()
    try:
        assert run(ex, tmp_path / "ok", "test.noop")["ok"]
        assert run(ex, tmp_path / "failed", "test.fail")["ok"] is False
        assert "timed out" in run(ex, tmp_path / "slow", "test.sleep", {"seconds": 30}, wall_seconds=1)["error"]
        handle, collector = spawn(ex, tmp_path / "cancelled", "test.sleep", {"seconds": 30})
        while not collector.messages:
            time.sleep(0.02)
        assert len(loops(tmp_path)) == 1  # the running task's: counting them works
        handle.kill("cancelled")
        assert collector.wait()["ok"] is False
        assert until_no_loops(tmp_path) == []
        handle, collector = spawn(ex, tmp_path / "stopped", "test.sleep", {"seconds": 30})
        while not collector.messages:
            time.sleep(0.02)
    finally:
        ex.stop()  # a graceful stop with a task running
    assert until_no_loops(tmp_path) == []


KILLED_SERVER = """
import sys, time
from pathlib import Path
from appliance.runtime.executors.local import LocalExecutor
from appliance.runtime.sandbox import Limits
from tests.integration.test_executor import spawn
ex = LocalExecutor(preload=("PIL",))
ex.start()
handle, collector = spawn(ex, Path(sys.argv[1]) / "w", "test.sleep", {"seconds": 60})
while not collector.messages:
    time.sleep(0.02)
print("running", flush=True)
time.sleep(120)
"""


def test_kill_9_of_the_server_leaves_no_loop_device(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_SERVER), str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "running"
        assert len(loops(tmp_path)) == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert until_no_loops(tmp_path) == []
    finally:
        if proc.poll() is None:
            proc.kill()


def test_doctor_says_the_kernel_enforces_the_quota_here():
    layer = dict((name, (active, detail)) for name, active, detail in layers_here())["disk quota"]
    assert layer[0] and layer[1].startswith("kernel-enforced"), layer
    fallback = disk_layer("no /dev/loop-control (load the loop module, or give the appliance the device)")
    assert fallback[2].startswith("measured, not kernel-enforced (no /dev/loop-control"), fallback
