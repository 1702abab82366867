"""GPUs across a Dask cluster, and a worker that runs unprivileged through the launcher: a real `dask scheduler`,
a real appliance server with executor = "dask", and two `appliance worker` processes.

- ``gpu``: root, measured by `appliance worker` itself with the only fakes allowed (a fake nvidia-smi and a fake
  encoder probe): GPU 0 an H200 (no encoder), GPU 1 an RTX A4000 (two NVENC sessions). The appliance grants these
  GPUs as its own; a granted attempt must run on this worker and see only its GPU, by the index it has here.
- ``plain``: uid nobody, no GPU; its sandboxed processes come from a root launcher on a socket, as a server's do.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from appliance.runtime import sandbox
from appliance.runtime.executors.dask_worker import GPUS_ENV
from tests.conftest import PYTHON, ROOT
from tests.integration.test_dask_executor import Cluster, appliance_on, tasks_of, until
from tests.integration.test_gpu_scheduling import FAKE_SMI, X264_SEI, _codec, _most_at_once
from tests.integration.test_launcher import NOBODY, NOGROUP, status_ids
from tests.unit.test_resources import FAKE_PROBE

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the unprivileged worker's launcher needs root")
ENCODE = {"renderer": "test.encode", "input": {"hold": 1.0, "frames": 5}}


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask-gpu")
    cluster = Cluster(root)
    top = Path(tempfile.mkdtemp(prefix="appliance-worker-"))  # pytest's temp dirs are 0700 root: not for nobody
    top.chmod(0o755)
    launcher = None
    try:
        bin_dir = root / "bin"
        bin_dir.mkdir()
        for name, text in (("nvidia-smi", FAKE_SMI), ("probe", FAKE_PROBE)):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        gpu_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "APPLIANCE_CPU_SLOTS": "4",
                   "APPLIANCE_MEMORY_MB": "4000", "APPLIANCE_ENCODER_PROBE": str(bin_dir / "probe"),
                   "APPLIANCE_PRELOAD": "PIL"}
        start_worker(cluster, "gpu", root / "gpu", gpu_env)
        wdir, sock = top / "worker", top / "run" / "launcher.sock"
        wdir.mkdir()
        os.chown(wdir, NOBODY, NOGROUP)
        log = open(root / "launcher.log", "wb")
        launcher = subprocess.Popen([PYTHON, "-m", "appliance.cli", "launcher", "--socket", str(sock), "--user",
                                     str(NOBODY), "--data-dir", str(wdir)], cwd=ROOT, stdout=log, stderr=log)
        until(lambda: sock.exists() or launcher.poll() is not None, "the launcher's socket", 30)
        assert sock.exists(), (root / "launcher.log").read_text()
        start_worker(cluster, "plain", wdir, {"PATH": "/usr/bin:/bin", "HOME": str(wdir), "APPLIANCE_PRELOAD": "PIL",
                                              "APPLIANCE_LAUNCHER_SOCKET": str(sock)},
                     resources="CPU=2,MEM=2000", user=NOBODY)
        until(lambda: len(cluster.client.scheduler_info(n_workers=-1)["workers"]) == 2, "two workers")
        yield cluster
    finally:
        cluster.close()
        if launcher is not None:
            launcher.terminate()
            launcher.wait(30)
        shutil.rmtree(top, ignore_errors=True)


def start_worker(cluster: Cluster, name: str, wdir: Path, env: dict, resources: str | None = None,
                 user: int | None = None) -> None:
    log = open(cluster.root / f"{name}.log", "ab")
    argv = [PYTHON, "-m", "appliance.cli", "worker", "--scheduler", cluster.address, "--name", name,
            "--worker-dir", str(wdir), "--host", "127.0.0.1", "--no-nanny"]
    if resources:
        argv += ["--resources", resources]
    extra = {"user": user, "group": NOGROUP, "extra_groups": []} if user is not None else {}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log, **extra)
    cluster.workers[name] = (proc, wdir)


@pytest.fixture(scope="module")
def server(gpu_cluster, tmp_path_factory):
    with appliance_on(gpu_cluster.address, tmp_path_factory.mktemp("appliance"), {"APPLIANCE_PRELOAD": "PIL"}) as s:
        yield s


def _gpus(server) -> list[dict]:
    return httpx.get(server.url + "/healthz").json()["capacity"]["gpus"]


@pytest.mark.slow
def test_the_cluster_gpus_are_granted_on_their_own_worker(server, gpu_cluster):
    gpu_worker = gpu_cluster.address_of("gpu")
    gpus = _gpus(server)  # what `appliance worker` measured on its machine, under the appliance's numbers
    assert [(g["index"], g["localIndex"], g["worker"], g["nvencSessions"]) for g in gpus] == [
        (0, 0, gpu_worker, 0), (1, 1, gpu_worker, 2)]
    assert gpus[0]["nvencReason"].startswith("h264_nvenc failed: [h264_nvenc @ 0x2] OpenEncodeSession")
    # six tasks that encode (an NVENC session where one is free) and two that need a GPU's compute
    job_id = server.submit("ada", tasks=[ENCODE] * 6 + [{**ENCODE, "gpu": 1}] * 2)
    job = server.wait(job_id, timeout=240)
    assert job["status"] == "completed", job
    tasks = tasks_of(server, job_id)
    runs = [{**t["result"]["meta"], "worker": t["result"]["worker"], "needs_gpu": bool(t["gpu"])} for t in tasks]
    granted = [r for r in runs if r["cuda"]]
    assert all(r["worker"] == gpu_worker for r in granted)  # a grant runs where its GPU is, nowhere else
    nvenc = [r for r in runs if r["nvenc"]]
    assert nvenc and {r["cuda"] for r in nvenc} == {"1"}  # the A4000 (its index there), never the H200
    assert _most_at_once([(r["start"], r["end"]) for r in nvenc]) <= 2
    compute = [r for r in runs if r["needs_gpu"]]
    assert len(compute) == 2 and {r["cuda"] for r in compute} <= {"0", "1"}
    for gpu in ("0", "1"):  # each GPU has one compute slot: its compute tasks never overlapped
        assert _most_at_once([(r["start"], r["end"]) for r in compute if r["cuda"] == gpu]) <= 1
    assert all(r["cuda"] == "" for r in runs if not r["nvenc"] and not r["needs_gpu"])
    # granted NVENC, h264_nvenc fails on this GPU-less machine: libx264 instead, and the MP4 says so
    assert all(r["encoder"] == "libx264" and r["nvencFallback"].startswith("h264_nvenc failed") for r in nvenc)
    for task in tasks:
        video = server.data_dir / "artifacts" / task["result"]["outputs"]["video.mp4"][:2] / \
            task["result"]["outputs"]["video.mp4"]
        assert _codec(video) == "h264/yuv420p" and X264_SEI in video.read_bytes()


def test_a_worker_with_a_malformed_gpu_list_adds_its_cpu_and_no_gpu(server, gpu_cluster):
    """A worker that declares a GPU but cannot list it (here: nonsense handed down by hand) is asked again on each
    refresh; the cluster's other figures still follow the workers (before: one bad list froze them all)."""
    before = httpx.get(server.url + "/healthz").json()["capacity"]
    env = {**os.environ, GPUS_ENV: '[{"index": "zero"}]', "APPLIANCE_PRELOAD": "PIL"}
    start_worker(gpu_cluster, "odd", gpu_cluster.root / "odd", env, resources="CPU=1,MEM=1000,GPU=1")
    try:
        until(lambda: httpx.get(server.url + "/healthz").json()["capacity"]["cpu"] == before["cpu"] + 1,
              "the odd worker's CPU in the capacity", 60)
        assert _gpus(server) == before["gpus"]
        assert "did not list its GPUs" in (server.data_dir / "server.log").read_text()
    finally:
        proc, _ = gpu_cluster.workers.pop("odd")
        proc.kill()
        proc.wait()
    until(lambda: httpx.get(server.url + "/healthz").json()["capacity"]["cpu"] == before["cpu"], "odd gone", 60)


@pytest.mark.slow
def test_an_unprivileged_worker_renders_through_its_launcher_and_gpu_tasks_fail_without_a_gpu_worker(
        server, gpu_cluster):
    proc, _ = gpu_cluster.workers["plain"]
    ids = status_ids(proc.pid)
    assert ids["Uid"] == [str(NOBODY)] * 4 and ids["CapEff"] == ["0000000000000000"], ids
    # the appliance asked every worker for its sandbox: both run the full one (the launcher's, for this worker)
    assert httpx.get(server.url + "/healthz").json()["sandbox"] == sandbox.FULL
    gpu_proc, _ = gpu_cluster.workers.pop("gpu")
    gpu_proc.kill()
    gpu_proc.wait()
    until(lambda: not _gpus(server), "the GPUs to leave with their worker", 60)
    job = server.wait(server.submit("ada", tasks=[{**ENCODE, "gpu": 1}]))
    assert job["status"] == "failed" and "no worker of the Dask cluster offers one" in job["error"], job
    # the unprivileged worker renders, each task as a uid of its own (neither root nor the worker's nobody)
    whoami = {"renderer": "test.hostile", "input": {"action": "exec", "argv": ["id", "-u"], "timeout": 30}}
    job = server.wait(server.submit("ada", tasks=[ENCODE, whoami]))
    assert job["status"] == "completed", job
    encode, ran_as = tasks_of(server, job["id"])
    assert encode["result"]["worker"] == ran_as["result"]["worker"] == gpu_cluster.address_of("plain")
    assert int(ran_as["result"]["meta"]["outcome"]["stdout"]) >= sandbox.UID_BASE
    video = server.data_dir / "artifacts" / encode["result"]["outputs"]["video.mp4"][:2] / \
        encode["result"]["outputs"]["video.mp4"]
    assert _codec(video) == "h264/yuv420p"
