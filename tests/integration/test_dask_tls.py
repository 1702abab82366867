"""A Dask cluster that trusts only its own (issue #17 item 5), on loopback: `appliance cluster init` makes a CA and
key pairs; `appliance scheduler` and `appliance worker` run mutual TLS from them; an appliance with dask_tls_dir
renders through it. A plain client (what gave any host uid 0 through `client.run`), a client and a worker with
key pairs of another CA get nowhere; a worker's declared CPU counts no more than dask_worker_max_cpu."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port
from tests.integration.test_dask_executor import appliance_on, until

distributed = pytest.importorskip("distributed")
from appliance.cli.cluster import security  # noqa: E402

PYTHON = sys.executable
pytestmark = pytest.mark.slow


def appliance(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "appliance.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "APPLIANCE_PRELOAD": "numpy"}
    return subprocess.Popen([PYTHON, "-m", "appliance.cli", *args], cwd=ROOT, env=env, stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT)


def worker(address: str, tls: Path, name: str, resources: str, root: Path) -> subprocess.Popen:
    return start(["worker", "--scheduler", address, "--tls-dir", str(tls), "--tls-name", name, "--name", name,
                  "--resources", resources, "--nthreads", "1", "--worker-dir", str(root / name), "--no-nanny"],
                 root / f"{name}.log")


def refused(address: str, **kw) -> bool:
    try:
        client = distributed.Client(address, timeout=4, set_as_default=False, **kw)
    except (OSError, TimeoutError):
        return True
    client.close()
    return False


def test_cluster_init_makes_a_ca_and_private_key_pairs(tmp_path):
    tls = tmp_path / "tls"
    made = appliance("cluster", "init", str(tls))
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in tls.iterdir()) == sorted(
        ["ca.pem", "ca.key"] + [f"{n}.{e}" for n in ("scheduler", "appliance", "worker") for e in ("pem", "key")])
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tls.glob("*.key"))
    assert appliance("cluster", "cert", str(tls), "render2").returncode == 0
    again = appliance("cluster", "init", str(tls))
    assert again.returncode != 0 and "exists" in again.stderr
    assert appliance("cluster", "cert", str(tls), "../evil").returncode != 0


def test_only_holders_of_the_clusters_key_pairs_get_in(tmp_path):
    tls, other = tmp_path / "tls", tmp_path / "other"
    assert appliance("cluster", "init", str(tls), "--name", "scheduler", "--name", "appliance", "--name", "w1",
                     "--name", "big").returncode == 0
    assert appliance("cluster", "init", str(other), "--name", "appliance", "--name", "rogue").returncode == 0
    port = free_port()
    address = f"tls://127.0.0.1:{port}"
    procs = [start(["scheduler", "--port", str(port), "--tls-dir", str(tls)], tmp_path / "scheduler.log")]
    try:
        admin = until(lambda: _client(address, tls), "the scheduler")
        procs.append(worker(address, tls, "w1", "CPU=1,MEM=2000", tmp_path))
        procs.append(worker(address, other, "rogue", "CPU=64,MEM=64000", tmp_path))  # another CA
        until(lambda: len(admin.scheduler_info(n_workers=-1)["workers"]) == 1, "the cluster's worker")
        # the holes of the issue: a plain client from any host, a client with another CA's key pair
        assert refused(f"tcp://127.0.0.1:{port}")
        assert refused(address, security=security(other, "appliance"))
        time.sleep(3)  # the rogue worker has had its chance to join
        names = sorted(w["name"] for w in admin.scheduler_info(n_workers=-1)["workers"].values())
        assert names == ["w1"], names
        procs.append(worker(address, tls, "big", "CPU=64,MEM=64000", tmp_path))  # ours, but it overstates
        until(lambda: len(admin.scheduler_info(n_workers=-1)["workers"]) == 2, "the second worker")
        env = {"APPLIANCE_DASK_TLS_DIR": str(tls), "APPLIANCE_DASK_WORKER_MAX_CPU": "2",
               "APPLIANCE_DASK_WORKER_MAX_MEM_MB": "4000", "APPLIANCE_PRELOAD": "numpy"}
        (tmp_path / "appliance").mkdir()
        with appliance_on(address, tmp_path / "appliance", env) as server:
            capacity = httpx.get(f"{server.url}/healthz", timeout=10).json()["capacity"]
            assert (capacity["cpu"], capacity["memMb"]) == (3, 6000), capacity
            job_id = server.submit("ada", "test.encode", {"frames": 5})
            job = server.wait(job_id)
            assert job["status"] == "completed", job
            assert job["tasks"][0]["status"] == "done"
        admin.close()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _client(address: str, tls: Path):
    try:
        return distributed.Client(address, timeout=5, set_as_default=False, security=security(tls, "appliance"))
    except (OSError, TimeoutError):
        return None
