"""Hardening of the sandbox (issue 8): seccomp, a PID namespace, a cgroup per task, disk and log quotas, no
silent fallback to running unsandboxed, and a result channel the task's code cannot reach. Real tasks in the
real sandbox: hostile actions of the ``test.hostile`` renderer (renderers/testing.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from appliance.runtime import sandbox
from appliance.runtime.executors.local import LocalExecutor
from appliance.runtime.sandbox import seccomp
from appliance.runtime.sandbox.cgroups import SLACK_MB, Cgroups
from tests.conftest import ROOT
from tests.integration.test_executor import gone, run, spawn

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the namespace sandbox and cgroups need root")


@pytest.fixture(scope="module")
def executor():
    ex = LocalExecutor(preload=("numpy", "PIL"))
    ex.start()
    yield ex
    ex.stop()


def hostile(executor: LocalExecutor, workdir: Path, limits: dict | None = None, **task_input):
    result = run(executor, workdir, "test.hostile", task_input, **(limits or {}))
    assert result["ok"] is True, result
    return result["result"]["meta"]["outcome"]


def logged_child(log_path: Path, collector, timeout: float = 10) -> int:
    """The pid that test.sleep's ``child`` logged (``child pid N``), from the messages or the task's log file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text() if log_path.exists() else ""
        for line in [*collector.logs(), *text.splitlines()]:
            if line.startswith("child pid "):
                return int(line.split()[-1])
        time.sleep(0.02)
    raise AssertionError(f"the task did not report its child: {collector.messages}")


def host_pid(worker: int, ns_pid: int) -> int:
    """The host pid of the process that a task (in its own PID namespace) knows as ``ns_pid``."""
    init = next(p for p in psutil.Process(worker).children())
    namespace = os.readlink(f"/proc/{init.pid}/ns/pid")
    for proc in psutil.process_iter():
        try:
            if os.readlink(f"/proc/{proc.pid}/ns/pid") != namespace:
                continue
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            continue
        nspid = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
        if int(nspid[-1]) == ns_pid:
            return proc.pid
    raise AssertionError(f"no process {ns_pid} in the namespace of worker {worker}")


# ---- 1. seccomp ------------------------------------------------------------------------------------------------
@root_only
def test_a_user_namespace_cannot_be_created(executor, tmp_path):
    outcome = hostile(executor, tmp_path / "w", action="exec", argv=["unshare", "-U", "-r", "id"])
    assert outcome["returncode"] != 0 and "uid=0" not in outcome["stdout"], outcome
    assert "Operation not permitted" in outcome["stderr"], outcome


@root_only
def test_dangerous_system_calls_are_refused_while_threads_fork_and_subprocesses_work(executor, tmp_path):
    outcome = hostile(executor, tmp_path / "w", action="syscalls")
    denied = ["unshare(NEWUSER)", "unshare(NEWNS)", "mount", "ptrace", "keyctl", "bpf", "perf_event_open",
              "userfaultfd", "setns", "clone(NEWUSER)"]
    assert {name: outcome[name] for name in denied} == {name: "EPERM" for name in denied}, outcome
    assert outcome["clone3"] == "ENOSYS", outcome  # so that libc falls back to clone, whose flags are checked
    assert (outcome["thread"], outcome["fork"], outcome["subprocess"]) == ("ok", "exit 7", "ok"), outcome


def test_the_filter_assembles_for_both_architectures():
    for machine in ("x86_64", "aarch64"):
        program = seccomp.program(machine)
        assert 40 < len(program) < 100
        assert all(0 <= jt < 256 and 0 <= jf < 256 for _, jt, jf, _ in program)
        assert program[-1] == (seccomp.RET, 0, 0, seccomp.RET_KILL_PROCESS)  # another architecture: killed


# ---- 2. PID namespace ------------------------------------------------------------------------------------------
@root_only
def test_the_task_sees_only_its_own_processes(executor, tmp_path):
    procs = hostile(executor, tmp_path / "w", action="listdir", path="/proc")
    pids = {name for name in procs if name.isdigit()}
    assert "2" in pids and pids <= {"1", "2"}, procs  # itself (and its init); no server, zygote or worker


@root_only
def test_kill_takes_an_escaped_grandchild_in_the_namespace_with_it(executor, tmp_path):
    handle, collector = spawn(executor, tmp_path / "w", "test.sleep", {"seconds": 30, "child": True, "escape": True})
    grandchild = host_pid(handle.pid, logged_child(tmp_path / "w.log", collector))
    assert os.getpgid(grandchild) != handle.pid  # it really left the task's process group
    assert psutil.Process(grandchild).uids().real == sandbox.task_uid(handle.pid)
    handle.kill()
    assert collector.wait()["error"] == "cancelled"
    assert gone(grandchild) and gone(handle.pid, group=True)


# ---- 3. cgroups ------------------------------------------------------------------------------------------------
@root_only
def test_children_over_the_memory_budget_are_killed(executor, tmp_path):
    """Each child stays under its own address-space limit; together they are far over the task's budget."""
    handle, collector = spawn(executor, tmp_path / "w", "test.hostile",
                              {"action": "childhog", "children": 3, "mb": 150, "hold": 5}, mem_mb=200)
    result = collector.wait()
    assert result["ok"] is False and result["error"] == "memory limit exceeded (limit 200 MB)", result
    assert [p for p in psutil.process_iter(["uids"]) if p.info["uids"].real == handle.uid] == []


@root_only
def test_each_task_gets_its_own_cgroup_with_its_limits_and_it_is_removed(executor, tmp_path):
    cgroups = Cgroups.find()
    assert cgroups is not None
    handle, collector = spawn(executor, tmp_path / "w", "test.sleep", {"seconds": 2}, mem_mb=300, nproc=40, cpu=2.0)
    dirs = cgroups.dirs(f"appliance-{executor.zygote_pid}-{handle.pid}")
    procs = Path(dirs["" if cgroups.version == 2 else "memory"], "cgroup.procs")
    deadline = time.monotonic() + 5  # the task runs (its first progress): its limits were written before it
    while time.monotonic() < deadline and not any(m["type"] == "progress" for m in collector.messages):
        time.sleep(0.01)
    assert str(handle.pid) in procs.read_text().split()  # the worker, and so everything the task starts
    if cgroups.version == 2:
        memory = int(Path(dirs[""], "memory.max").read_text())
        pids = int(Path(dirs[""], "pids.max").read_text())
        assert int(Path(dirs[""], "cpu.weight").read_text()) == 200
    else:
        memory = int(Path(dirs["memory"], "memory.limit_in_bytes").read_text())
        pids = int(Path(dirs["pids"], "pids.max").read_text())
        assert int(Path(dirs["cpu"], "cpu.shares").read_text()) == 2048
    assert 300 + SLACK_MB <= memory >> 20 <= 300 + SLACK_MB + 1024, memory  # budget + the preloaded image
    assert pids == 42
    assert collector.wait()["ok"] is True
    assert not any(os.path.exists(d) for d in dirs.values())


@root_only
def test_a_task_with_slack_gets_its_share_of_the_cpu_weight_on_the_live_hierarchy(executor, tmp_path):
    """Limits.weight (a scene that a longer scene of its job outlasts: scheduler.SLACK_WEIGHT) scales the cgroup's
    CPU weight on the hierarchy this machine has, not only in the v2 files below."""
    cgroups = Cgroups.find()
    assert cgroups is not None
    handle, collector = spawn(executor, tmp_path / "w", "test.sleep", {"seconds": 1}, cpu=1.0, weight=0.25)
    dirs = cgroups.dirs(f"appliance-{executor.zygote_pid}-{handle.pid}")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(m["type"] == "progress" for m in collector.messages):
        time.sleep(0.01)
    if cgroups.version == 2:
        assert int(Path(dirs[""], "cpu.weight").read_text()) == 25
    else:
        assert int(Path(dirs["cpu"], "cpu.shares").read_text()) == 256
    assert collector.wait()["ok"] is True


def test_cgroup_v2_limits_are_written(tmp_path):
    """No v2 controllers on every test machine: the files a v2 task cgroup gets, in a plain directory."""
    cgroups = Cgroups(2, {"": str(tmp_path)})
    cgroups.create("appliance-1-2", sandbox.Limits(mem_mb=100, nproc=10, cpu=0.5), 50, join=False)
    files = {p.name: p.read_text() for p in (tmp_path / "appliance-1-2").iterdir()}
    assert files == {"memory.max": str((150 + SLACK_MB) << 20), "pids.max": "12", "memory.swap.max": "0",
                     "memory.oom.group": "1", "cpu.weight": "50"}
    assert cgroups.oom_counter("appliance-1-2").endswith("/appliance-1-2/memory.events")
    cgroups.create("appliance-1-3", sandbox.Limits(cpu=2.0, weight=0.25), 50, join=False)  # a task with slack
    assert (tmp_path / "appliance-1-3" / "cpu.weight").read_text() == "50"


# ---- 4. disk and log -------------------------------------------------------------------------------------------
@root_only
def test_a_task_that_fills_its_workdir_is_killed(executor, tmp_path):
    started = time.monotonic()
    handle, collector = spawn(executor, tmp_path / "w", "test.hostile",
                              {"action": "fill", "mb": 2000, "pause": 0.002}, disk_mb=20)
    result = collector.wait()
    assert result["ok"] is False and result["error"] == "disk quota exceeded (limit 20 MB)", result
    assert (tmp_path / "w" / "fill.bin").stat().st_size < 1000 << 20  # stopped long before it was done
    assert time.monotonic() - started < 10


@root_only
def test_a_fast_fill_is_caught_by_the_last_measurement(executor, tmp_path):
    result = run(executor, tmp_path / "w", "test.hostile", {"action": "fill", "mb": 60}, disk_mb=20)
    assert result["ok"] is False and result["error"] == "disk quota exceeded (limit 20 MB)", result


@root_only
def test_staged_inputs_do_not_count_against_the_disk_quota(executor, tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "input.bin").write_bytes(b"x" * (30 << 20))
    assert run(executor, tmp_path / "w", "test.noop", disk_mb=20)["ok"] is True


@root_only
def test_the_log_is_capped(executor, tmp_path):
    result = run(executor, tmp_path / "w", "test.hostile", {"action": "spam", "mb": 8}, log_mb=1)
    assert result["ok"] is True, result
    log = (tmp_path / "w.log").read_bytes()
    assert len(log) < (1 << 20) + 4096
    assert log.count(b"[log truncated]\n") == 1
    assert log.rstrip(b"\n").splitlines()[-1].startswith(b"[executor] task w exit: ok")


@root_only
def test_cpu_time_is_the_tasks_not_each_processs(executor, tmp_path):
    """Issue #17 item 9: RLIMIT_CPU is per process, so three busy children each got the whole limit (3 x 12 s ran
    under 30 s). The cgroup counts them together: with 2 CPU seconds, three spinning children are stopped once
    they used ~2 s between them, and the task fails saying so."""
    spin = "for i in 1 2 3; do (while :; do :; done) & done; wait"
    result = run(executor, tmp_path / "w", "test.hostile", {"action": "exec", "argv": ["sh", "-c", spin],
                                                            "timeout": 60}, cpu_seconds=2)
    assert result["ok"] is False, result
    assert result["error"] == "cpu time limit exceeded (limit 2 s)", result
    assert result["usage"]["cpu_s"] < 6, result["usage"]  # each child alone would have had 2 s: 6 s and more


@root_only
@pytest.mark.parametrize("how, error", [
    ("import os\nfd = os.open('hidden', os.O_RDWR | os.O_CREAT)\nos.unlink('hidden')\ntry:\n"
     "    os.posix_fallocate(fd, 0, 64 << 20)\nexcept OSError:\n    pass\nimport time\ntime.sleep(3)",
     "disk quota exceeded (limit 16 MB)"),
    ("import os\nos.mkdir('d')\nfor i in range(60000): open(f'd/{i}', 'w').close()\nimport time\n"
     "time.sleep(3)", "disk quota exceeded: too many files in the workdir (limit 20000)"),
], ids=["unlinked-fallocate", "inode-flood"])
def test_hidden_disk_use_and_inode_floods_are_stopped(executor, tmp_path, how, error):
    """Issue #17 item 3: fallocate on a deleted file still open hid 1.3 GB from a 256 MB quota; 30,000 inodes in
    1.3 s starved another user's job. With a filesystem of its own (here) the kernel stops both at the image's
    blocks and inodes (fallocate ends in ENOSPC, which the task may swallow) and the watch names the quota; in
    the measured fallback it sees open deleted files through /proc and counts files."""
    result = run(executor, tmp_path / "w", "test.hostile", {"action": "exec", "timeout": 60,
                                                            "argv": [sys.executable, "-c", how]}, disk_mb=16)
    assert result["ok"] is False and result["error"] == error, result


HEAD_KB = 64


@root_only
def test_a_flood_leaves_a_small_log_when_the_task_ends(executor, tmp_path):
    """Issue #17 item 3: a failing task's log was kept whole up to its 16 MB cap (10 jobs: 160 MB in 2 s, kept
    90 days); when the task ends it is cut to its head and tail."""
    result = run(executor, tmp_path / "w", "test.hostile", {"action": "spam", "mb": 8})
    assert result["ok"] is True, result
    log = (tmp_path / "w.log").read_bytes()
    assert len(log) < 300 * 1024, len(log)
    assert log.count(b"bytes of this log dropped") == 1 and b"0000000 spam" in log[:HEAD_KB << 10]
    assert log.rstrip(b"\n").splitlines()[-1].startswith(b"[executor] task w exit: ok")


@root_only
def test_the_tasks_tmp_is_capped_by_its_memory_budget(executor, tmp_path):
    outcome = hostile(executor, tmp_path / "w", action="exec", limits={"mem_mb": 100},
                      argv=["sh", "-c", "head -c 300M /dev/zero > /tmp/big; echo $?; du -m /tmp/big"])
    assert "No space left on device" in outcome["stderr"], outcome
    assert int(outcome["stdout"].split()[-2]) <= 100, outcome


# ---- 5. no silent fallback -------------------------------------------------------------------------------------
def test_untrusted_code_is_refused_without_the_sandbox():
    assert sandbox.untrusted_allowed(sandbox.FULL, False) is None
    assert sandbox.untrusted_allowed(sandbox.NOT_ROOT, True) is None
    for mechanism in (sandbox.NOT_ROOT, sandbox.DISABLED, "rlimits only (no isolation: the sandbox failed)"):
        refusal = sandbox.untrusted_allowed(mechanism, False)
        assert refusal and "\n" not in refusal and "APPLIANCE_ALLOW_UNSANDBOXED=true" in refusal, refusal
    assert "as root" in sandbox.untrusted_allowed(sandbox.NOT_ROOT, False)
    assert "sandbox = true" in sandbox.untrusted_allowed(sandbox.DISABLED, False)


AS_NOBODY = """
import json, sys
from pathlib import Path
from appliance.runtime.executors.local import LocalExecutor
from tests.integration.test_executor import run
ex = LocalExecutor(preload=())
ex._config["allow_unsandboxed"] = sys.argv[2] == "allow"
ex.start()
try:
    print(json.dumps([ex.mechanism, run(ex, Path(sys.argv[1]) / "w", "test.noop")]))
finally:
    ex.stop()
"""


@root_only
@pytest.mark.parametrize("allow", [False, True])
def test_the_zygote_refuses_tasks_when_the_sandbox_is_unavailable(allow):
    """Run as nobody: the sandbox needs root, so it is unavailable although it is requested."""
    work = tempfile.mkdtemp(prefix="unsandboxed-")
    os.chmod(work, 0o777)
    try:
        proc = subprocess.run([sys.executable, "-c", AS_NOBODY, work, "allow" if allow else "refuse"],
                              capture_output=True, text=True, cwd="/", user=65534, group=65534, timeout=120,
                              env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, proc.stderr
        mechanism, result = json.loads(proc.stdout.splitlines()[-1])
        assert mechanism == sandbox.NOT_ROOT
        if allow:
            assert result["ok"] is True, result
            assert os.path.exists(f"{work}/w/out.txt")
        else:
            assert result["ok"] is False and result["error"] == sandbox.untrusted_allowed(mechanism, False), result
            assert not os.path.exists(f"{work}/w/out.txt")
    finally:
        subprocess.run(["rm", "-rf", work])


# ---- 6. the result channel -------------------------------------------------------------------------------------
def _pipe_inodes(pid: int | str) -> set[str]:
    inodes = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("pipe:"):
            inodes.add(target)
    return inodes


@root_only
def test_the_servers_pipe_is_out_of_the_tasks_reach(executor, tmp_path):
    handle, collector = spawn(executor, tmp_path / "w", "test.hostile", {"action": "pipes", "forge": True})
    deadline = time.monotonic() + 5
    server_pipe: set[str] = set()
    while not server_pipe and time.monotonic() < deadline:  # the pipe both this process and the worker hold
        try:
            server_pipe = _pipe_inodes(handle.pid) & _pipe_inodes("self")
        except FileNotFoundError:
            break
    result = collector.wait()
    assert result["ok"] is True, result  # the forged error line did not become the task's outcome
    assert len(server_pipe) == 1, server_pipe
    reached = result["result"]["meta"]["outcome"]["pipes"]
    assert reached and not server_pipe & set(reached), (server_pipe, reached)
    assert not any("FORGED" in m.get("text", "") for m in collector.messages), collector.messages


# ---- 7. doctor -------------------------------------------------------------------------------------------------
@root_only
def test_every_layer_is_listed_and_active_here():
    layers = sandbox.layers()
    assert [name for name, _, _ in layers] == ["mount/net namespaces", "PID namespace", "seccomp", "cgroup limits",
                                               "disk quota", "unprivileged uid"]
    assert all(active for _, active, _ in layers), layers
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "doctor", "--data-dir", tempfile.mkdtemp()],
                         capture_output=True, text=True, cwd=ROOT).stdout
    for name, _, _ in layers:
        assert any(line.startswith("OK") and name in line for line in out.splitlines()), out


@root_only
def test_the_uid_killer_kills_only_task_uids():
    """The zygote's small helper that kills what a task's uid left running (zygote.UidKiller): every process of
    a task uid dies, a uid below UID_BASE is refused (kill(-1) as nobody, let alone root, would reach others),
    and with the helper gone the zygote still kills, the slow way."""
    from appliance.runtime.executors.zygote import UidKiller

    task_uid, nobody = sandbox.UID_BASE + 4242, 65534
    procs = {uid: subprocess.Popen(["sleep", "600"], user=uid, group=65534, extra_groups=[], start_new_session=True)
             for uid in (task_uid, nobody)}
    killer = UidKiller()
    try:
        killer.kill_uid(nobody)
        killer.kill_uid(task_uid)
        assert procs[task_uid].wait(10) == -9
        assert procs[nobody].poll() is None  # refused: not a task uid
        again = subprocess.Popen(["sleep", "600"], user=task_uid, group=65534, extra_groups=[])
        os.kill(killer.pid, 9)
        os.waitpid(killer.pid, 0)
        killer.kill_uid(task_uid)  # the helper is dead: the zygote's own kill_uid
        assert again.wait(10) == -9
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
