"""Split privileges (README "Install as a service"): the privileged launcher runs as root on a Unix socket, the
HTTP server runs as an unprivileged uid and gets its sandboxed workers from it. Real processes, real uids."""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from appliance.runtime.executors.local import UNKNOWN_SANDBOX as UNKNOWN
from renderers.ffmpeg import probe, video_stream
from tests.conftest import PYTHON, ROOT, Server, until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the launcher builds sandboxes: needs root")
NOBODY, NOGROUP, STRANGER = 65534, 65534, 12345
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
WX_MAPPING = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC); print('mapped')"
SCENE = {"code": "from manim import *\n\nclass Dot1(Scene):\n    def construct(self):\n        self.add(Dot())\n"
                 "        self.wait(0.2)\n", "className": "Dot1", "quality": "low", "fps": 5}
# A client of the launcher's protocol, run as some uid: connect, say hello, ask for one test.noop in WORKDIR,
# print every report up to spawn_failed or exited, then what the task wrote on its pipe.
CLIENT = textwrap.dedent("""\
    import json, os, socket, sys
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(sys.argv[1])
    sock.send(json.dumps({"preload": []}).encode())
    print(sock.recv(65536).decode(), flush=True)
    r, w = os.pipe()
    memfd = os.memfd_create("in")
    os.write(memfd, b"{}")
    os.lseek(memfd, 0, os.SEEK_SET)
    request = {"op": "spawn", "id": 1, "task_id": "t", "renderer": "test.noop", "workdir": sys.argv[2],
               "limits": {}}
    socket.send_fds(sock, [json.dumps(request).encode()], [w, os.open("/dev/null", os.O_WRONLY), memfd])
    os.close(w)
    while True:
        report = json.loads(sock.recv(65536))
        print(json.dumps(report), flush=True)
        if report["type"] in ("spawn_failed", "exited"):
            break
    with os.fdopen(r, "rb") as pipe:
        print(json.dumps({"type": "pipe", "lines": pipe.read().decode().splitlines()}), flush=True)
    """)


def status_ids(pid: int) -> dict[str, list[str]]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "CapEff", "CapPrm"):
            fields[key] = value.split()
    return fields


def run_as(uid: int, *argv: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, cwd=ROOT, user=uid, group=NOGROUP,
                          extra_groups=[], env={"PATH": "/usr/bin:/bin", **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """A launcher (root) on a socket and a server (uid nobody) using it, in a directory nobody may enter
    (pytest's own temp dirs are 0700 root)."""
    top = Path(tempfile.mkdtemp(prefix="appliance-launcher-"))
    top.chmod(0o755)
    tmp_path = tmp_path_factory.mktemp("launcher")
    data, sock = top / "var", top / "run" / "launcher.sock"
    data.mkdir()
    os.chown(data, NOBODY, NOGROUP)
    log = open(tmp_path / "launcher.log", "wb")
    launcher = subprocess.Popen([PYTHON, "-m", "appliance.cli", "launcher", "--socket", str(sock), "--user",
                                 str(NOBODY), "--data-dir", str(data)], cwd=ROOT, stdout=log, stderr=log)
    server = Server(data, {"APPLIANCE_LAUNCHER_SOCKET": str(sock), "HOME": str(top)})
    try:
        deadline = time.time() + 30
        while not sock.exists() and time.time() < deadline and launcher.poll() is None:
            time.sleep(0.05)
        assert sock.exists(), (tmp_path / "launcher.log").read_text()
        start_as_nobody(server)
        yield server, launcher, sock, tmp_path / "launcher.log"
    finally:
        server.stop(signal.SIGKILL)
        launcher.terminate()
        launcher.wait(30)
        shutil.rmtree(top, ignore_errors=True)


def deny_write_execute() -> None:
    """The kernel's counterpart of the unit's MemoryDenyWriteExecute= (PR_SET_MDWE, Linux 6.3+; a no-op on
    older kernels): no memory both writable and executable, for this process and what it executes."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0)


def start_as_nobody(server: Server, timeout: float = 120) -> None:
    log = open(server.data_dir / "server.log", "ab")
    server.proc = subprocess.Popen([PYTHON, "-m", "appliance.cli", "serve", "--data-dir", str(server.data_dir),
                                    "--port", str(server.port)], cwd=ROOT, env=server.env, stdout=log, stderr=log,
                                   user=NOBODY, group=NOGROUP, extra_groups=[], umask=0o027,  # as the unit
                                   preexec_fn=deny_write_execute)
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert server.proc.poll() is None, (server.data_dir / "server.log").read_text()[-3000:]
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("server did not become healthy")


def cli_as_nobody(server: Server, *args: str) -> str:
    proc = run_as(NOBODY, PYTHON, "-m", "appliance.cli", *args, "--data-dir", str(server.data_dir),
                  env={"HOME": str(server.data_dir), "APPLIANCE_MIN_FREE_DISK_MB": "1"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_an_unprivileged_server_renders_through_the_launcher(split):
    server, launcher, _sock, _log = split
    ids = status_ids(server.proc.pid)
    assert ids["Uid"] == [str(NOBODY)] * 4 and ids["Gid"] == [str(NOGROUP)] * 4, ids
    assert ids["CapEff"] == ["0000000000000000"] and ids["CapPrm"] == ["0000000000000000"], ids
    assert status_ids(launcher.pid)["Uid"][0] == "0"
    wx = subprocess.run([PYTHON, "-c", WX_MAPPING], capture_output=True, text=True, preexec_fn=deny_write_execute)
    mdwe = wx.returncode != 0 and "PermissionError" in wx.stderr  # the server below runs under it too
    print(f"server under PR_SET_MDWE (MemoryDenyWriteExecute): {mdwe}")
    # The server answers while its warm worker starts through the launcher; health names the sandbox once it has.
    health = until(lambda: (h := httpx.get(server.url + "/healthz", timeout=10).json())["sandbox"] != UNKNOWN and h,
                   "the launcher's answer")
    assert health["sandbox"].startswith("namespaces("), health  # the launcher's full sandbox, not "rlimits only"

    cli_as_nobody(server, "users", "create", "ada", "--credits", "100")
    key = json.loads(cli_as_nobody(server, "keys", "create", "--user", "ada", "--dialect", "kodisc", "--json"))["key"]
    auth = {"Authorization": f"Bearer {key}"}
    job_id = httpx.post(f"{server.url}/api/v2/render", json=SCENE, headers=auth, timeout=10).json()["jobId"]
    job = server.wait(job_id, timeout=300)
    assert job["status"] == "completed", job
    video = server.data_dir / "outputs" / job_id / "video.mp4"
    stream = video_stream(probe(video))
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 854, 480), stream
    # Everything the server must later delete is its own; the task's workdir was given back and removed.
    for path in [video, *(server.data_dir / "artifacts").rglob("*")]:
        assert path.stat().st_uid == NOBODY, path
    assert list((server.data_dir / "work").iterdir()) == []
    artifact = next(p for p in (server.data_dir / "artifacts").rglob("*") if p.is_file())
    removed = run_as(NOBODY, "rm", "-r", str(video.parent), str(artifact))  # what retention and DELETE remove
    assert removed.returncode == 0 and not video.exists() and not artifact.exists(), removed.stderr

    sleeper = server.submit("ada", "test.sleep", {"seconds": 60})  # cancel reaches a worker of another uid
    server.wait(sleeper, statuses=("running",), timeout=60)
    httpx.post(f"{server.url}/admin/jobs/{sleeper}/cancel", headers=server.admin_headers(), timeout=10)
    assert server.wait(sleeper, timeout=30)["status"] == "cancelled"


def test_only_the_appliance_uid_may_connect_and_workdirs_are_checked(split):
    server, _launcher, sock, log = split
    stranger = run_as(STRANGER, PYTHON, "-c", "from appliance.runtime.executors.forkserver import ZygoteClient\n"
                      f"ZygoteClient({{'launcher_socket': {str(sock)!r}, 'preload': []}}).start(30)",
                      env={"PYTHONPATH": str(ROOT)})
    assert stranger.returncode != 0
    assert f"refused: uid {STRANGER} may not use this launcher" in stranger.stderr, stderr_tail(stranger)
    assert f"refused a connection from uid {STRANGER}" in log.read_text()

    # The allowed uid, asking root to act on paths outside its own workdirs: refused before any fork.
    work = server.data_dir / "work"
    work.mkdir(exist_ok=True)
    os.chown(work, NOBODY, NOGROUP)
    (work / "evil").symlink_to("/etc")
    os.lchown(work / "evil", NOBODY, NOGROUP)
    (work / "roots").mkdir()
    etc_before = os.stat("/etc")
    for workdir, reason in (("/etc", "is not directly under"), (f"{work}/evil", "is not a plain directory"),
                            (f"{work}/x/../../var", "is not directly under"), (f"{work}/roots", "not owned by")):
        proc = run_as(NOBODY, PYTHON, "-c", CLIENT, str(sock), workdir)
        assert proc.returncode == 0, stderr_tail(proc)
        ready, answer, _pipe = (json.loads(line) for line in proc.stdout.splitlines())
        assert ready["type"] == "ready" and ready["mechanism"].startswith("namespaces("), ready
        assert answer["type"] == "spawn_failed" and reason in answer["error"], (workdir, answer)
    assert os.stat("/etc").st_uid == etc_before.st_uid == 0 and os.stat("/etc").st_mode == etc_before.st_mode


def test_doctor_asks_the_launcher_for_the_sandbox(split):
    """Run as the service's user, doctor reports the sandbox the launcher gives tasks, layer by layer (probed
    as that unprivileged user, every layer would look missing); a user the launcher refuses is told why."""
    server, _launcher, sock, _log = split
    env = {"HOME": str(server.data_dir), "APPLIANCE_MIN_FREE_DISK_MB": "1", "APPLIANCE_LAUNCHER_SOCKET": str(sock)}
    doctor = run_as(NOBODY, PYTHON, "-m", "appliance.cli", "doctor", "--data-dir", str(server.data_dir), env=env)
    lines = doctor.stdout.splitlines()
    sandbox_line = next(line for line in lines if line.split()[1:2] == ["sandbox"])
    assert sandbox_line.startswith("OK   sandbox    namespaces(") and f"via the launcher at {sock}" in sandbox_line
    layers = [line for line in lines if line.split()[1:2] and line.split()[1] == "-"
              and not line.split()[2].startswith("GPU")]
    assert len(layers) >= 4 and all(line.startswith("OK ") for line in layers), doctor.stdout
    refused = run_as(STRANGER, PYTHON, "-m", "appliance.cli", "doctor", "--data-dir", str(server.data_dir),
                     env={**env, "HOME": "/tmp"})
    assert f"refused: uid {STRANGER} may not use this launcher" in refused.stdout and refused.returncode == 1, \
        refused.stdout + refused.stderr


def stderr_tail(proc: subprocess.CompletedProcess) -> str:
    return proc.stderr[-2000:]
