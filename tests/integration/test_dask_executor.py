"""executor = "dask" against a real cluster on loopback: a `dask scheduler` and two `appliance worker` processes
(each a real Dask worker with its own zygote and sandbox), a real appliance server configured to use them.

Holding tasks are the hostile renderer's ``exec`` of a shell loop that ends when a file named ``release``
appears in the task's workdir on its worker: the tests decide when a task ends, never the clock.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from renderers.ffmpeg import probe, video_stream
from tests.conftest import ROOT, Server, free_port

distributed = pytest.importorskip("distributed")
from appliance.runtime.executors import dask_worker  # noqa: E402

PYTHON = sys.executable
HOLD = {"action": "exec", "argv": ["sh", "-c", "while [ ! -e release ]; do sleep 0.05; done"], "timeout": 600}
WAIT_S = 120  # a ceiling for conditions that hold within seconds on a quiet machine; never a measurement


def until(condition, what: str, timeout: float = WAIT_S):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.workers: dict[str, tuple[subprocess.Popen, Path]] = {}  # name -> (process, worker dir)
        log = open(root / "scheduler.log", "ab")
        self.scheduler = subprocess.Popen([PYTHON, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                           "--port", self.address.rsplit(":", 1)[1], "--no-dashboard"],
                                          cwd=ROOT, stdout=log, stderr=log)
        self.client = distributed.Client(self.address, timeout=60, set_as_default=False)

    def start_worker(self, name: str) -> None:
        wdir = self.root / name
        log = open(self.root / f"{name}.log", "ab")
        env = {**os.environ, "APPLIANCE_PRELOAD": "numpy,PIL,renderers.movie.compose"}
        proc = subprocess.Popen([PYTHON, "-m", "appliance.cli", "worker", "--scheduler", self.address, "--name", name,
                                 "--resources", "CPU=1,MEM=2000", "--nthreads", "1", "--worker-dir", str(wdir),
                                 "--host", "127.0.0.1", "--no-nanny"], cwd=ROOT, env=env, stdout=log, stderr=log)
        self.workers[name] = (proc, wdir)

    def ensure_two(self) -> None:
        for name in ("w1", "w2"):
            if name not in self.workers or self.workers[name][0].poll() is not None:
                self.start_worker(name)
        until(lambda: len(self.client.scheduler_info(n_workers=-1)["workers"]) == 2, "two workers")

    def address_of(self, name: str) -> str:
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        return next(addr for addr, w in workers.items() if w["name"] == name)

    def running(self) -> dict[str, dict[str, int]]:
        """worker name -> {attempt key: pid} of the appliance tasks running there."""
        names = {addr: w["name"] for addr, w in self.client.scheduler_info(n_workers=-1)["workers"].items()}
        answers = self.client.run(dask_worker.running, on_error="ignore")
        return {names.get(addr, addr): keys for addr, keys in answers.items()}

    def where(self, key: str) -> str | None:
        return next((name for name, keys in self.running().items() if key in keys), None)

    def release(self, key: str) -> None:
        """Let the holding attempt ``key`` end: the file its shell loop waits for, in its workdir. With a task
        filesystem of its own (runtime/sandbox/taskfs.py) that is /task in the task's mount namespace, reached
        as root through its worker process; with the measured quota, the workdir on the host."""
        name = until(lambda: self.where(key), f"{key} running")
        pid = self.running()[name][key]
        own = Path(f"/proc/{pid}/root/task")
        folder = own if own.is_dir() else self.workers[name][1] / "work" / key.split("#")[0]
        (folder / "release").write_text("")

    def close(self) -> None:
        self.client.close()
        for proc, _ in self.workers.values():
            proc.kill()
        self.scheduler.kill()
        for proc in [self.scheduler, *(p for p, _ in self.workers.values())]:
            proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        yield c
    finally:
        c.close()


@contextlib.contextmanager
def appliance_on(address: str, data_dir: Path, env: dict):
    """A real appliance server with executor = "dask" on the cluster at ``address``, and a user ada."""
    server = Server(data_dir, {"APPLIANCE_EXECUTOR": "dask", "APPLIANCE_DASK_SCHEDULER": address, **env})
    server.start()
    server.cli("users", "create", "ada")
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def dask_server(cluster, tmp_path_factory):
    """One appliance for the module (starting one costs more than any test here); the restart test runs last."""
    with appliance_on(cluster.address, tmp_path_factory.mktemp("appliance"),
                      {"APPLIANCE_PRELOAD": "numpy", "APPLIANCE_MAX_ATTEMPTS": "2"}) as server:
        yield server


@pytest.fixture
def app(cluster, dask_server):
    cluster.ensure_two()  # the test before may have killed one
    return dask_server


def tasks_of(server, job_id: str) -> list[dict]:
    with sqlite3.connect(f"file:{server.data_dir / 'appliance.db'}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("select * from tasks where job_id = ? order by id", (job_id,)).fetchall()
    return [{**dict(r), "result": json.loads(r["result"] or "null")} for r in rows]


def holding_job(server, n: int = 2) -> tuple[str, list[str]]:
    job_id = server.submit("ada", tasks=[{"renderer": "test.hostile", "input": HOLD, "name": f"hold{i}"}
                                         for i in range(n)])
    return job_id, [t["id"] for t in tasks_of(server, job_id)]


def both_running(cluster, keys: list[str]) -> dict[str, dict[str, int]]:
    """Each worker offers CPU=1, so two holding tasks run one per worker."""
    def check():
        running = cluster.running()
        return running if all(any(k in keys_ for keys_ in running.values()) for k in keys) else None
    return until(check, f"{keys} running")


# ---- the tests ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_movie_renders_across_both_workers(app, cluster):
    scenes = [{"id": f"s{i}", "duration": 1, "bgColor": "#203040", "layers": [
        {"id": "t", "type": "text", "text": f"scene {i}", "startTime": 0, "duration": 1,
         "position": {"x": 10, "y": 10}, "size": {"width": 200, "height": 60}, "fontSize": 24}]} for i in range(6)]
    movie = {"width": 640, "height": 360, "fps": 10, "scenes": scenes}
    job = app.wait(app.submit("ada", movie=movie), timeout=300)
    assert job["status"] == "completed", job
    tasks = tasks_of(app, job["id"])
    ran_on = {t["name"]: t["result"]["worker"] for t in tasks}
    assert len(ran_on) == 7  # six scenes and the assembly, each taken in from a worker's bytes
    assert {ran_on[f"s{i}"] for i in range(6)} == {cluster.address_of("w1"), cluster.address_of("w2")}
    video = next((app.data_dir / "outputs" / job["id"]).glob("*.mp4"))
    stream = video_stream(probe(video))
    assert stream and (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 640, 360)
    assert int(stream["nb_read_frames"]) == 60
    log = (app.data_dir / "logs" / f"{tasks[0]['id']}.log").read_text()
    assert "exit: ok" in log  # the worker's task log came back with the result
    # Progress from the workers reached the job's events, which SSE streams and webhooks are made of.
    events = httpx.get(f"{app.url}/admin/jobs/{job['id']}/events", headers=app.admin_headers()).json()
    assert any(e["type"] == "progress" and 0 < e["data"]["progress"] < 1 for e in events)


@pytest.mark.slow
def test_a_worker_killed_mid_task_is_retried_elsewhere(app, cluster):
    job_id, (first, second) = holding_job(app)
    running = both_running(cluster, [f"{first}#1", f"{second}#1"])
    victim = next(name for name, keys in running.items() if f"{first}#1" in keys)
    cluster.workers[victim][0].kill()  # SIGKILL: no goodbye to the scheduler
    cluster.release(f"{second}#1")  # frees the survivor, which then takes the second attempt of the first
    cluster.release(f"{first}#2")
    job = app.wait(job_id)
    assert job["status"] == "completed", job
    attempts = {t["id"]: t["attempts"] for t in job["tasks"]}
    assert attempts == {first: 2, second: 1}
    events = httpx.get(f"{app.url}/admin/jobs/{job_id}/events", headers=app.admin_headers()).json()
    retry = [e for e in events if e["type"] == "retrying"]
    assert retry and "worker lost" in retry[0]["data"]["error"]


@pytest.mark.slow
def test_cancel_kills_the_remote_processes(app, cluster):
    job_id, keys = holding_job(app)
    running = both_running(cluster, [f"{k}#1" for k in keys])
    pids = [pid for keys_ in running.values() for key, pid in keys_.items() if key.split("#")[0] in keys]
    assert len(pids) == 2 and all(Path(f"/proc/{pid}").exists() for pid in pids)
    r = httpx.post(f"{app.url}/admin/jobs/{job_id}/cancel", headers=app.admin_headers())
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    until(lambda: not any(cluster.running().values()), "no task left on the workers")
    assert not [pid for pid in pids if _alive(pid)]


def test_an_exit_forged_as_a_task_event_ends_nothing(app, cluster):
    """A worker's task events carry progress only: an 'exit' one logs (as a rogue worker could, for any running
    key) does not end the attempt or bring its outputs in; the attempt's future does."""
    job_id, keys = holding_job(app, 1)
    key = f"{keys[0]}#1"
    both_running(cluster, [key])

    def forge(dask_worker=None):  # a closure: pickled by value, run on every worker
        dask_worker.log_event("appliance-task", {"key": key, "type": "message", "message": {
            "type": "exit", "ok": True, "result": {"files": {"video": "forged.mp4"}},
            "outputs": {"forged.mp4": "0" * 64}}})

    cluster.client.run(forge)
    time.sleep(1.5)  # waiting for nothing to happen: the events reach the appliance within a batch interval
    assert app.job(job_id)["status"] == "running" and tasks_of(app, job_id)[0]["status"] == "running"
    cluster.release(key)
    job = app.wait(job_id)
    assert job["status"] == "completed" and "forged.mp4" not in json.dumps(tasks_of(app, job_id)[0]["result"])


@pytest.mark.slow
def test_the_appliance_restarted_mid_job_recovers(app, cluster):
    job_id, keys = holding_job(app)
    running = both_running(cluster, [f"{k}#1" for k in keys])
    orphans = [pid for keys_ in running.values() for pid in keys_.values()]
    app.stop(signal.SIGKILL)
    app.start()  # the same data dir: its tasks are re-queued as attempt 2; attempt 1 is killed on the workers
    for key in keys:
        cluster.release(f"{key}#2")
    job = app.wait(job_id)
    assert job["status"] == "completed", job
    assert [t["attempts"] for t in job["tasks"]] == [2, 2]
    assert not [pid for pid in orphans if _alive(pid)]


def _alive(pid: int) -> bool:
    """A pid that still exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# ---- configuration and the worker command line (no cluster) ----------------------------------------------------
def test_worker_command_line_offers_resources():
    from appliance.cli import build_parser, worker

    args = build_parser().parse_args(["worker", "--scheduler", "tls://10.0.0.5:8786", "--resources",
                                      "CPU=8, MEM=30000,GPU=1", "--tls-ca-file", "ca.pem", "--no-nanny"])
    offered = worker.parse_resources(args.resources)
    assert offered == {"CPU": 8.0, "MEM": 30000.0, "GPU": 1.0}
    argv = worker.worker_argv(args, offered)
    assert argv[1:4] == ["-m", "distributed.cli.dask_worker", "tls://10.0.0.5:8786"]
    flags = {flag: value for flag, value in zip(argv, argv[1:], strict=False)
             if flag.startswith("--") and not value.startswith("--")}
    assert flags["--preload"] == "appliance.runtime.executors.dask_worker"
    assert flags["--resources"] == "CPU=8,MEM=30000,GPU=1" and flags["--nthreads"] == "8"
    assert flags["--tls-ca-file"] == "ca.pem" and {"--no-nanny", "--no-dashboard"} <= set(argv)


@pytest.mark.parametrize("resources, message", [("CPU=two,MEM=1", "bad --resources entry 'CPU=two'"),
                                                ("CPU", "bad --resources entry 'CPU'"),
                                                ("GPU=1", "must offer CPU and MEM")])
def test_worker_refuses_bad_resources(tmp_path, resources, message):
    proc = subprocess.run([PYTHON, "-m", "appliance.cli", "worker", "--scheduler", "tcp://127.0.0.1:1",
                           "--resources", resources], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and message in proc.stderr


@pytest.mark.parametrize("values, message", [({"executor": "dsak"}, 'executor must be "local" or "dask"'),
                                             ({"executor": "dask"}, "needs dask_scheduler")])
def test_executor_settings_are_checked_when_the_core_is_built(tmp_path, values, message):
    from appliance.core import Core
    from appliance.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match=message):
        Core(Settings(data_dir=tmp_path, **values))
