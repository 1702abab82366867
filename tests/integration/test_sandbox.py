"""Hostile tasks prove each restriction of the sandbox (ARCHITECTURE.md, "Sandbox"; issue 2 item 6)."""
from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path

import psutil
import pytest

import appliance
from appliance.runtime import sandbox
from appliance.runtime.executors.local import LocalExecutor
from tests.integration.test_executor import gone, run, spawn
from tests.integration.test_sandbox_hardening import executor, host_pid, hostile, logged_child  # noqa: F401 - executor is a fixture

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the namespace sandbox needs root (CI runs as root); as another user the executor "
                              "falls back to rlimits only, which test_executor.py covers")

CHECKOUT = Path(appliance.__file__).resolve().parent.parent


def exec_in(executor: LocalExecutor, workdir: Path, *argv: str) -> dict:
    outcome = hostile(executor, workdir, action="exec", argv=list(argv))
    assert outcome["returncode"] == 0, outcome
    return outcome


def test_the_full_sandbox_is_active(executor):
    assert executor.mechanism == sandbox.FULL
    assert sandbox.probe() == sandbox.FULL


def test_network_is_unreachable(executor, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # reachable from the host
        outcome = hostile(executor, tmp_path / "w", action="connect", port=port)
    assert set(outcome) == {f"127.0.0.1:{port}", "1.1.1.1:443"}
    assert all(value.startswith("error: ") for value in outcome.values()), outcome


def test_the_data_dir_and_database_are_invisible(executor, tmp_path):
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    (data_dir / "appliance.db").write_text("SQLite format 3 -- secrets")
    read = hostile(executor, tmp_path / "w", action="read", path=str(data_dir / "appliance.db"))
    assert read.startswith("error: FileNotFoundError"), read
    listing = hostile(executor, tmp_path / "w", action="listdir", path=str(tmp_path))
    assert listing.startswith("error: FileNotFoundError"), listing  # its workdir is /task: no host path shows


@pytest.mark.parametrize("target", ["/usr/pwned", "/etc/pwned", "/pwned", "CHECKOUT/pwned", "PACKAGE/pwned",
                                    "VENV/pwned", "/dev/pwned"])
def test_writes_outside_the_workdir_fail(executor, tmp_path, target):
    path = (target.replace("CHECKOUT", str(CHECKOUT)).replace("PACKAGE", str(CHECKOUT / "renderers"))
            .replace("VENV", sys.prefix))
    outcome = hostile(executor, tmp_path / "w", action="write", path=path)
    assert outcome.startswith("error: "), outcome
    assert not os.path.exists(os.path.normpath(path))


def test_the_workdir_is_writable_and_the_tasks_tmp_is_private(executor, tmp_path):
    name = f"sandbox-tmp-{uuid.uuid4().hex}"
    assert hostile(executor, tmp_path / "w", action="write", path="/task/out.txt") == "ok"
    assert (tmp_path / "w" / "out.txt").read_text() == "pwned\n"  # a bare run's files come back at its end
    assert hostile(executor, tmp_path / "w", action="write", path=f"/tmp/{name}") == "ok"
    assert not os.path.exists(f"/tmp/{name}")


def test_the_hosts_tmp_is_invisible(executor, tmp_path):
    secret = Path("/tmp") / f"host-secret-{uuid.uuid4().hex}"
    secret.write_text("secret")
    try:
        outcome = hostile(executor, tmp_path / "w", action="read", path=str(secret))
    finally:
        secret.unlink()
    assert outcome.startswith("error: FileNotFoundError"), outcome


def test_the_task_runs_without_privileges(executor, tmp_path):
    status = dict(line.split(":", 1) for line in
                  hostile(executor, tmp_path / "w", action="read", path="/proc/self/status").splitlines())
    uids = status["Uid"].split()
    assert uids[0] != "0" and len(set(uids)) == 1 and int(uids[0]) >= sandbox.UID_BASE
    for field in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert int(status[field], 16) == 0, (field, status[field])
    assert status["NoNewPrivs"].strip() == "1"


def test_a_fork_bomb_is_contained(executor, tmp_path):
    handle, collector = spawn(executor, tmp_path / "w", "test.hostile", {"action": "forkbomb"}, nproc=32)
    result = collector.wait()
    outcome = result["result"]["meta"]["outcome"]
    assert 0 < outcome["forked"] < 32, outcome
    assert "Resource temporarily unavailable" in outcome["error"]
    assert [p.pid for p in psutil.process_iter(["uids"]) if p.info["uids"].real == handle.uid] == []
    assert run(executor, tmp_path / "after", "test.noop")["ok"] is True  # the host is fine


def test_a_memory_bomb_is_contained(executor, tmp_path):
    outcome = hostile(executor, tmp_path / "w", action="membomb", limits={"mem_mb": 256})
    assert outcome["allocated_mb"] <= 256 and outcome["error"].startswith("MemoryError"), outcome
    assert run(executor, tmp_path / "after", "test.noop")["ok"] is True


def test_tasks_cannot_see_each_other(executor, tmp_path):
    handle, other = spawn(executor, tmp_path / "a", "test.sleep", {"seconds": 30})
    (tmp_path / "a" / "secret.txt").write_text("a's secret")
    try:
        read = hostile(executor, tmp_path / "b", action="read", path=str(tmp_path / "a" / "secret.txt"))
        procs = hostile(executor, tmp_path / "b", action="listdir", path="/proc")
    finally:
        handle.kill()
    assert read.startswith("error: FileNotFoundError"), read
    assert str(handle.pid) not in procs and str(executor.zygote_pid) not in procs
    assert other.wait()["error"] == "cancelled"


def test_a_grandchild_that_left_the_process_group_dies_with_its_task(executor, tmp_path):
    handle, collector = spawn(executor, tmp_path / "w", "test.sleep", {"seconds": 30, "child": True, "escape": True})
    grandchild = host_pid(handle.pid, logged_child(tmp_path / "w.log", collector))  # a pid in its PID namespace
    assert os.getpgid(grandchild) != handle.pid  # it really escaped the group
    handle.kill()
    assert collector.wait()["error"] == "cancelled"
    assert gone(grandchild)


def test_latex_and_dvisvgm_run_inside(executor, tmp_path):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "tiny.tex").write_text(r"\documentclass{article}\begin{document}$e^{i\pi}+1=0$\end{document}")
    exec_in(executor, workdir, "sh", "-c", "latex -interaction=nonstopmode -halt-on-error tiny.tex"
                                           " && dvisvgm --no-fonts tiny.dvi")
    assert (workdir / "tiny.svg").read_text().lstrip().startswith("<?xml")
    assert "<svg" in (workdir / "tiny.svg").read_text()


def test_fonts_are_available_inside(executor, tmp_path):
    assert exec_in(executor, tmp_path / "w", "fc-list")["stdout"].strip()
    code = ("from PIL import ImageFont; "
            "print(ImageFont.truetype('/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf', 20).getname())")
    assert "DejaVu Sans" in exec_in(executor, tmp_path / "w", sys.executable, "-c", code)["stdout"]


def test_python_imports_manim_inside(executor, tmp_path):
    outcome = exec_in(executor, tmp_path / "w", sys.executable, "-c", "import manim; print(manim.__version__)")
    assert outcome["stdout"].strip().startswith("0.")
    # and in the worker itself, where manim was not preloaded by this executor
    result = run(executor, tmp_path / "w", "test.noop", {"imports": ["manim"]})
    assert result["ok"] is True, result


@pytest.mark.slow
def test_manim_mathtex_renders_inside(executor, tmp_path):
    code = ("import os; os.makedirs('media/Tex')  # as a scene render would\n"
            "from manim import MathTex; print(len(MathTex(r'\\int_0^1 x^2\\,dx').submobjects))")
    outcome = exec_in(executor, tmp_path / "w", sys.executable, "-c", code)
    assert int(outcome["stdout"].strip().splitlines()[-1]) >= 1, outcome
