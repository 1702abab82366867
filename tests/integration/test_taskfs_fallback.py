"""The per-task filesystem's other sides (issue #17 follow-up; appliance/runtime/sandbox/taskfs.py): the measured
quota that ``task_fs = "off"`` forces, tried end to end with hostile tasks, and what `appliance doctor` says of it;
the zygote's template filesystems (one mkfs per size, not per task); and a task that hits ENOSPC and exits at
once, which fails on its quota whatever its own error says. Real tasks in the real sandbox, loop devices counted
with ``losetup -a`` (tests/integration/test_taskfs.py)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from appliance.runtime.executors.local import LocalExecutor
from appliance.runtime.sandbox import layers, taskfs
from appliance.runtime.sandbox.probe import taskfs_here
from appliance.settings import SettingsError, load
from tests.integration.test_executor import run, spawn
from tests.integration.test_taskfs import exec_outcome, loops, until_no_loops

pytestmark = pytest.mark.skipif(taskfs.unavailable() is not None or taskfs_here() is not None,
                                reason=f"no per-task filesystem here: {taskfs.unavailable()}")
MEASURED = "measured, not kernel-enforced (task_fs = off)"


@pytest.fixture(scope="module")
def measured():
    """An executor whose tasks get the measured quota although a filesystem of their own could be made."""
    ex = LocalExecutor(preload=("PIL",), task_fs="off")
    ex.start()
    yield ex
    ex.stop()


# ---- task_fs = off: the measured quota, end to end ------------------------------------------------------------
UNLINKED_FALLOCATE = ("import os, time\nfd = os.open('hidden', os.O_RDWR | os.O_CREAT)\nos.unlink('hidden')\n"
                      "os.posix_fallocate(fd, 0, 256 << 20)\ntime.sleep(30)")


@pytest.mark.parametrize("task_input, error", [
    ({"action": "fill", "mb": 2000, "pause": 0.002}, "disk quota exceeded (limit 20 MB)"),
    ({"action": "fill", "mb": 60}, "disk quota exceeded (limit 20 MB)"),
    ({"action": "exec", "timeout": 60, "argv": [sys.executable, "-c", UNLINKED_FALLOCATE]},
     "disk quota exceeded (limit 20 MB)"),
], ids=["slow-fill", "fast-fill", "unlinked-fallocate"])
def test_with_task_fs_off_the_measured_quota_contains_a_disk_fill(measured, tmp_path, task_input, error):
    """A slow fill is killed by the walk, a fast one caught by the last walk, a deleted-but-open fallocate
    (invisible to any walk) by the zygote's look through /proc: all on the host's workdir, no loop device."""
    result = run(measured, tmp_path / "w", "test.hostile", task_input, disk_mb=20)
    assert result["ok"] is False and result["error"] == error, result
    assert loops(tmp_path) == []
    fill = tmp_path / "w" / "fill.bin"
    assert not fill.exists() or fill.stat().st_size < 1000 << 20  # on the host's disk, stopped long before 2 GB


def test_with_task_fs_off_the_task_writes_the_hosts_workdir_not_a_loop_device(measured, tmp_path):
    script = ["sh", "-c", "grep ' /task ' /proc/self/mountinfo; echo hi > mine.txt"]
    result = run(measured, tmp_path / "w", "test.hostile", {"action": "exec", "argv": script})
    assert result["ok"], result
    mountinfo = result["result"]["meta"]["outcome"]["stdout"]
    assert " /task " in mountinfo and "/dev/loop" not in mountinfo, mountinfo
    assert (tmp_path / "w" / "mine.txt").read_text() == "hi\n"  # the bind of the host workdir, written in place


def test_doctor_says_the_quota_is_measured_when_task_fs_is_off(measured):
    disk = {name: (active, detail) for name, active, detail in layers(task_fs="off")}["disk quota"]
    assert disk[1].startswith(MEASURED), disk
    probed = {name: detail for name, _, detail in measured.layers() or []}  # where tasks start: the zygote
    assert probed["disk quota"].startswith(MEASURED), probed
    env = {**os.environ, "APPLIANCE_TASK_FS": "off", "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "doctor", "--data-dir", tempfile.mkdtemp()],
                         capture_output=True, text=True, env=env, timeout=300).stdout
    line = next(line for line in out.splitlines() if "disk quota:" in line)
    assert MEASURED in line, out


def test_task_fs_takes_only_auto_or_off():
    assert load(environ={"APPLIANCE_TASK_FS": "off"}).task_fs == "off"
    assert load(environ={}).task_fs == "auto"
    with pytest.raises(SettingsError, match="task_fs must be auto or off"):
        load(environ={"APPLIANCE_TASK_FS": "measured"})
    with pytest.raises(ValueError, match="task_fs must be one of"):
        LocalExecutor(task_fs="none")


# ---- task_fs = auto: templates, and ENOSPC at exit --------------------------------------------------------------
@pytest.fixture(scope="module")
def own():
    ex = LocalExecutor(preload=("PIL",))
    ex.start()
    yield ex
    ex.stop()


FSID = ("import os; st = os.statvfs('.'); "
        "print(st.f_fsid, st.f_blocks * st.f_frsize, os.stat('.').st_uid == os.getuid())")


def test_tasks_of_one_size_share_the_zygotes_template_and_own_their_root(own, tmp_path):
    """statvfs's f_fsid comes from the filesystem's UUID: equal for copies of one template (no mkfs per task),
    different for another quota's. The root of each copy is the task's own uid's."""
    seen = []
    for name, disk_mb in (("a", 16), ("b", 16), ("c", 48)):
        outcome = exec_outcome(own, tmp_path / name, FSID, disk_mb=disk_mb)["result"]["meta"]["outcome"]
        fsid, size, owned = outcome["stdout"].split()
        seen.append((fsid, int(size)))
        assert owned == "True", outcome
    assert seen[0] == seen[1] and seen[2][0] != seen[0][0] and seen[2][1] > seen[0][1] + (30 << 20), seen
    assert until_no_loops(tmp_path) == []


def test_tasks_with_a_few_inputs_share_a_template_too(own, tmp_path):
    """The zygote rounds the staged inputs up (taskfs.INPUT_STEP) when it picks the template: 1 MB and 5 MB of
    inputs get copies of one filesystem, each with its inputs in it, read-only and costing no quota."""
    seen = []
    for name, mb in (("a", 1), ("b", 5)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "in.bin").write_bytes(b"i" * (mb << 20))
        script = FSID + "; print(os.path.getsize('in.bin'))"
        outcome = exec_outcome(own, tmp_path / name, script, disk_mb=16)["result"]["meta"]["outcome"]
        fsid, _, owned, size = outcome["stdout"].split()
        assert owned == "True" and int(size) == mb << 20, outcome
        seen.append(fsid)
    assert seen[0] == seen[1], seen


EXIT_AT_ONCE = ("import os, sys\nfd = os.open('big', os.O_WRONLY | os.O_CREAT)\ntry:\n    while True:\n"
                "        os.write(fd, b'x' * (3 << 20))\nexcept OSError:\n    sys.exit(3)")


def test_a_task_that_hits_enospc_and_exits_at_once_fails_on_its_quota(own, tmp_path):
    """3 MB writes: ENOSPC with up to ~2 MB free, the task exits 3 at once with no word of it. Its filesystem,
    full at exit, says what happened (before, the task completed: ENOSPC could come at exactly the quota)."""
    result = exec_outcome(own, tmp_path / "w", EXIT_AT_ONCE, disk_mb=16)
    assert result["ok"] is False and result["error"] == "disk quota exceeded (limit 16 MB)", result
    assert until_no_loops(tmp_path) == []


def test_a_task_within_its_quota_is_not_called_full(own, tmp_path):
    script = "open('data', 'wb').write(b'x' * (15 << 20))"
    result = exec_outcome(own, tmp_path / "w", script, disk_mb=16)
    assert result["ok"] and result["result"]["meta"]["outcome"]["returncode"] == 0, result


def test_the_template_is_sealed_and_no_running_task_holds_it(own, tmp_path):
    """What later tasks mount cannot be changed through a descriptor of it, and the worker closes its copy
    before any of the task's code runs (the zygote keeps the only one)."""
    template = taskfs.Template.make(*taskfs.sizing(1, 0, 64))
    try:
        for change in (lambda: os.pwrite(template.fd, b"x", 0), lambda: os.ftruncate(template.fd, 1 << 20)):
            with pytest.raises(PermissionError):
                change()
    finally:
        template.close()
    handle, collector = spawn(own, tmp_path / "w", "test.sleep", {"seconds": 30}, disk_mb=16)
    while not collector.messages:
        time.sleep(0.02)
    held = []
    for pid in [handle.pid, *map(int, Path(f"/proc/{handle.pid}/task/{handle.pid}/children").read_text().split())]:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                held.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    handle.kill("done")
    collector.wait()
    assert held and not [link for link in held if "taskfs-template" in link], held
    assert until_no_loops(tmp_path) == []
