"""The service install (README "Install as a service"): `appliance install` into a --root, the two units checked
by systemd's own `systemd-analyze verify` and `security --offline`, the launcher started with exactly its unit's
capability bounding set, and the first-run keys kept out of the journal."""
from __future__ import annotations

import json
import os
import pty
import re
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import PYTHON, ROOT
from tests.integration.test_launcher import CLIENT, NOBODY, NOGROUP, run_as

ANALYZE = shutil.which("systemd-analyze")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="appliance install needs root")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
# linux/capability.h: the numbers of the capabilities the launcher's unit may name.
CAP_NUMBERS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_KILL": 5,
               "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_SYS_CHROOT": 18, "CAP_SYS_ADMIN": 21,
               "CAP_SYS_RESOURCE": 24}
KEY = re.compile(r"^  (kodisc|viralsync|rendercad)\s+(\S+)$", re.M)


def appliance(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("APPLIANCE_", "INVOCATION_ID", "JOURNAL_"))}
    if "stdout" not in kw:
        kw["capture_output"] = True
    return subprocess.run([PYTHON, "-m", "appliance.cli", *args], text=True, cwd=ROOT, env={**base, **(env or {})},
                          timeout=120, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`appliance install --root DIR` with a fresh system user, removed afterwards."""
    root = tmp_path_factory.mktemp("root")
    user = f"appl{os.getpid() % 100000}"
    proc = appliance("install", "--root", str(root), "--user", user, "--state-dir", "/var/lib/appliance")
    try:
        assert proc.returncode == 0, proc.stderr
        yield root, user, proc.stdout
    finally:
        subprocess.run(["userdel", user], capture_output=True)


@needs_root
def test_install_creates_the_user_the_state_dir_and_both_units(installed):
    root, user, out = installed
    import pwd

    account = pwd.getpwnam(user)
    assert account.pw_uid < 1000 and account.pw_shell.endswith("nologin")  # a system user, no login
    state = root / "var/lib/appliance"
    info = state.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (account.pw_uid, 0o750)
    server = (root / "etc/systemd/system/appliance.service").read_text()
    launcher = (root / "etc/systemd/system/appliance-launcher.service").read_text()
    assert f"User={user}" in server and "User=root" in launcher and f"--user {user}" in launcher
    assert f"ExecStart={ROOT}/.venv/bin/appliance serve" in server  # this checkout's venv
    for line in ("NoNewPrivileges=yes", "CapabilityBoundingSet=\n", "ProtectSystem=strict", "PrivateTmp=yes",
                 "ProtectHome=yes", "ReadWritePaths=/var/lib/appliance", "SystemCallFilter=@system-service",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "MemoryDenyWriteExecute=yes",
                 "APPLIANCE_LAUNCHER_SOCKET=/run/appliance/launcher.sock"):
        assert line in server, line
    assert "CAP_SYS_ADMIN" in launcher and "ProtectSystem=strict" in launcher
    assert "first-run-keys.txt" in out


@needs_root
@needs_analyze
def test_systemd_analyze_verify_is_clean(installed):
    root, _user, _out = installed
    units = root / "etc/systemd/system"
    proc = subprocess.run([ANALYZE, "verify", "appliance.service", "appliance-launcher.service"], cwd=units,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if "appliance" in line]
    assert ours == [], ours


@needs_root
@needs_analyze
def test_systemd_analyze_security_exposure_of_the_server_is_at_most_3(installed):
    root, _user, _out = installed
    units = root / "etc/systemd/system"
    if "--offline" not in subprocess.run([ANALYZE, "--help"], capture_output=True, text=True).stdout:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250): no security review without a running "
                    "systemd")
    figures = {}
    for unit in ("appliance.service", "appliance-launcher.service"):
        proc = subprocess.run([ANALYZE, "security", "--offline=true", unit], cwd=units, capture_output=True,
                              text=True, timeout=120)
        found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
        assert found, proc.stdout[-2000:] + proc.stderr
        figures[unit] = float(found.group(1))
    print(f"systemd-analyze security --offline=true exposure: {figures}")
    assert figures["appliance.service"] <= 3.0, figures


@needs_root
def test_the_launcher_works_with_only_its_units_capabilities(installed):
    """The launcher under exactly the unit's CapabilityBoundingSet: the full sandbox, a task that runs, its
    workdir given back to the server's uid."""
    root, _user, _out = installed
    unit = (root / "etc/systemd/system/appliance-launcher.service").read_text()
    caps = re.search(r"^CapabilityBoundingSet=(.+)$", unit, re.M).group(1).split()
    bounding = "-all," + ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    top = Path(tempfile.mkdtemp(prefix="appliance-caps-"))
    launcher = None
    try:
        top.chmod(0o755)
        data, sock = top / "var", top / "run/launcher.sock"
        (data / "work/t1").mkdir(parents=True)
        for path in (data, data / "work", data / "work/t1"):
            os.chown(path, NOBODY, NOGROUP)
        data.chmod(0o750)  # as installed: root reaches it by CAP_DAC_READ_SEARCH alone
        launcher = subprocess.Popen(["setpriv", "--bounding-set", bounding, "--inh-caps", "-all", "--",
                                     PYTHON, "-m", "appliance.cli", "launcher", "--socket", str(sock), "--user",
                                     str(NOBODY), "--data-dir", str(data)], cwd=ROOT, stderr=subprocess.PIPE)
        while not sock.exists():
            assert launcher.poll() is None, launcher.stderr.read() if launcher.stderr else ""
            time.sleep(0.05)
        wanted = sum(1 << CAP_NUMBERS[c] for c in caps) & bounding_set(os.getpid())  # a container may lack some
        assert bounding_set(launcher.pid) == wanted, (hex(bounding_set(launcher.pid)), hex(wanted))
        proc = run_as(NOBODY, PYTHON, "-c", CLIENT, str(sock), str(data / "work/t1"))
        assert proc.returncode == 0, proc.stderr[-2000:]
        reports = [json.loads(line) for line in proc.stdout.splitlines()]
        assert reports[0]["mechanism"].startswith("namespaces("), reports[0]
        assert [r["type"] for r in reports[1:]] == ["spawned", "exited", "pipe"], reports
        assert reports[2]["status"] == 0, reports
        assert any('"type": "result"' in line for line in reports[3]["lines"]), reports[3]
        out = data / "work/t1/out.txt"
        assert out.read_text() == "noop\n" and out.stat().st_uid == NOBODY  # given back, not the task uid's
        assert (data / "work/t1").stat().st_uid == NOBODY
    finally:
        if launcher is not None:
            launcher.terminate()
            launcher.wait(30)
        shutil.rmtree(top, ignore_errors=True)


def bounding_set(pid: int) -> int:
    return int(re.search(r"^CapBnd:\s*([0-9a-f]+)$", Path(f"/proc/{pid}/status").read_text(), re.M).group(1), 16)


def test_first_run_keys_go_to_a_0600_file_under_systemd(tmp_path):
    d = tmp_path / "var"
    proc = appliance("init", "--data-dir", str(d), env={"INVOCATION_ID": "0123abcd"})  # stdout: a pipe, the journal
    assert proc.returncode == 0, proc.stderr
    keys_file = d / "first-run-keys.txt"
    assert not KEY.search(proc.stdout) and str(keys_file) in proc.stdout, proc.stdout
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600 and keys_file.stat().st_uid == os.geteuid()
    assert sorted(m.group(1) for m in KEY.finditer(keys_file.read_text())) == ["kodisc", "rendercad", "viralsync"]


def test_first_run_keys_are_printed_on_a_terminal_even_under_systemd(tmp_path):
    main, child = pty.openpty()
    try:
        proc = appliance("init", "--data-dir", str(tmp_path / "var"), env={"INVOCATION_ID": "0123abcd"},
                         stdout=child, stderr=subprocess.PIPE)
        os.close(child)
        assert proc.returncode == 0, proc.stderr
        text = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            text += chunk
    finally:
        os.close(main)
    printed = text.decode().replace("\r\n", "\n")
    assert sorted(m.group(1) for m in KEY.finditer(printed)) == ["kodisc", "rendercad", "viralsync"], printed
    assert not (tmp_path / "var/first-run-keys.txt").exists()
