"""Hostile Manim scenes through the Kodisc API: each ends "failed" with a one-line reason, costs nothing and
refunds its reserve, while a normal scene submitted alongside still completes (README "Sandbox")."""
from __future__ import annotations

import os
import time
import uuid

import httpx
import psutil
import pytest

from appliance.runtime.sandbox import UID_BASE
from tests.conftest import ROOT
from tests.integration.test_kodisc_api import poll

pytestmark = pytest.mark.slow

CREDITS = 500
FIELDS = ["jobId", "endpoint", "status", "createdAt", "completedAt", "durationMs", "creditsCost", "metadata",
          "result", "error"]


def scene(body: str, class_name: str = "Hostile") -> str:
    """A tiny scene whose construct() runs ``body`` (indented 8) and then waits a few frames."""
    lines = "".join(f"        {line}\n" for line in body.strip("\n").splitlines())
    return (f"import ctypes, os, socket, sys\nfrom manim import *\n\nclass {class_name}(Scene):\n"
            f"    def construct(self):\n{lines}        self.add(Dot())\n        self.wait(0.4)\n")


def request(code: str, case: str, class_name: str = "Hostile") -> dict:
    return {"code": code, "className": class_name, "quality": "low", "fps": 5, "metadata": {"case": case}}


def normal(label: str) -> dict:
    """A normal scene; ``label`` makes the code (and so the cache key) unique."""
    return request(scene(f"self.add(Text({label!r}, font_size=24))", "Normal"), f"normal-{label}", "Normal")


def submit(server, body: dict) -> str:
    r = httpx.post(f"{server.url}/api/v2/render", json=body, headers=server.auth, timeout=10)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued" and r.json()["endpoint"] == "render"
    return r.json()["jobId"]


def me_total(server) -> int:
    r = httpx.get(f"{server.url}/api/v2/me", headers=server.auth, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["credits"]["total"]


def assert_failed(job: dict, case: str, *reasons: str) -> None:
    """The exact failed job object; ``reasons``: the error contains at least one of them."""
    assert list(job) == FIELDS, job
    assert job["endpoint"] == "render" and job["status"] == "failed", (case, job)
    assert job["creditsCost"] == 0 and job["result"] is None, (case, job)
    assert job["metadata"] == {"case": case}, job
    assert job["completedAt"] is not None and isinstance(job["durationMs"], int) and job["durationMs"] >= 0, job
    error = job["error"]
    assert isinstance(error, str) and error.strip() and "\n" not in error and len(error) <= 500, (case, error)
    assert "Traceback" not in error, (case, error)
    assert any(reason in error for reason in reasons), (case, error, reasons)


def assert_completed(job: dict, case: str) -> None:
    assert list(job) == FIELDS, job
    assert job["status"] == "completed" and job["error"] is None, (case, job)
    assert job["metadata"] == {"case": case} and job["creditsCost"] > 0, job
    assert set(job["result"]) == {"video", "thumbnail", "captions", "image"}, job
    assert job["result"]["video"].endswith(f"/r/{job['jobId']}/video.mp4"), job


def task_uid(server, job_id: str) -> int:
    """The sandbox uid of the job's (only) task, from the worker's line in the task log."""
    log = (server.data_dir / "logs" / f"{job_id}.t000.log").read_text(errors="replace")
    line = next(line for line in log.splitlines() if line.startswith("[worker] task"))
    return int(line.rsplit(" uid ", 1)[1])


def sandboxed_processes(server) -> list[psutil.Process]:
    """Processes of the server's process tree that run under a sandbox uid."""
    found = []
    for proc in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if proc.uids().real >= UID_BASE:
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def wait_no_uid(uids: set[int], server, timeout: float = 10) -> list:
    deadline = time.time() + timeout
    while True:
        left = [p.pid for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real in uids]
        left += [p.pid for p in sandboxed_processes(server)]
        if not left or time.time() > deadline:
            return left
        time.sleep(0.2)


@pytest.fixture(scope="module")
def kodisc_box(make_module_server):
    return make_module_server({"APPLIANCE_CPU_SLOTS": "16"})  # every hostile job at once: they mostly fail at once


@pytest.fixture
def kodisc(kodisc_box):
    """The module's server (what one hostile test did must not harm the next) with a user of this test's own."""
    server = kodisc_box
    server.key = server.new_key(server.fresh_user(CREDITS, prefix="mallory"), "kodisc")
    server.auth = {"Authorization": f"Bearer {server.key['key']}"}
    return server


def test_hostile_scenes_fail_cleanly_while_a_normal_scene_completes(kodisc):
    server = kodisc
    data_dir = server.data_dir.resolve()
    victim = poll(server, submit(server, normal("victim")), server.auth)
    assert_completed(victim, "normal-victim")
    victim_video = data_dir / "outputs" / victim["jobId"] / "video.mp4"
    assert victim_video.is_file()  # it is there on the host, so the scene below really tries a real file
    assert (data_dir / "appliance.db").is_file()
    tag = uuid.uuid4().hex[:12]
    checkout_file, usr_file = ROOT / f"pwned-{tag}.txt", f"/usr/pwned-{tag}"

    unreachable = ("OSError: [Errno 101] Network is unreachable (scene line 6)",  # no interface, lo is down
                   "OSError: the scene tried to use the network, but renders have no network access")
    not_found = ("FileNotFoundError: [Errno 2] No such file or directory",)
    read_only = ("Read-only file system", "Permission denied")
    cases = {  # case -> (construct body, the error names one of these)
        "connect-server": (f"socket.create_connection(('127.0.0.1', {server.port}), timeout=3).close()\n"
                           "raise RuntimeError('CONNECTED to the server')", unreachable),
        "connect-internet": ("socket.create_connection(('1.1.1.1', 443), timeout=3).close()\n"
                             "raise RuntimeError('CONNECTED to 1.1.1.1')", unreachable),
        "read-db": (f"data = open({str(data_dir / 'appliance.db')!r}, 'rb').read(100)\n"
                    "raise RuntimeError('READ THE DATABASE: ' + repr(data[:16]))", not_found),
        "read-other-output": (f"data = open({str(victim_video)!r}, 'rb').read(100)\n"
                              "raise RuntimeError('READ ANOTHER JOB: ' + repr(data[:8]))", not_found),
        # the task's own filesystem is mounted at /task, so no path of the data dir exists in its root at all
        # (with the measured quota, the workdir's bind mount left only data_dir/work/<task> to list)
        "list-data-dir": (f"raise RuntimeError('listing ' + repr(sorted(os.listdir({str(data_dir)!r}))))",
                          (*not_found, "RuntimeError: listing ['work'] (scene line 6)")),
        "write-checkout": (f"open({str(checkout_file)!r}, 'w').write('pwned')\n"
                           "raise RuntimeError('WROTE the checkout')", read_only),
        "write-usr": (f"open({usr_file!r}, 'w').write('pwned')\nraise RuntimeError('WROTE /usr')", read_only),
        "membomb": ("hog = bytearray(64 << 30)\nraise RuntimeError('ALLOCATED 64 GiB')",  # over the 4 GB limit
                    ("MemoryError", "out of memory")),
        "exit-3": ("os._exit(3)", ("worker exited with status 3 without a result",)),
        "segfault": ("ctypes.string_at(0)", ("worker crashed (SIGSEGV)",)),
        "forkbomb": ("while True:\n    os.fork()", ("Resource temporarily unavailable", "worker ")),
        # seccomp: no new user namespace, so no uid 0 with full capabilities inside one
        "unshare": ("import subprocess\n"
                    "r = subprocess.run(['unshare', '-U', '-r', 'id'], capture_output=True, text=True)\n"
                    "raise RuntimeError('unshare said: ' + (r.stdout + r.stderr).strip())",
                    ("unshare said: unshare: unshare failed: Operation not permitted",)),
        # the PID namespace: the renderer alone (its init is not dumpable, so hidden too), nothing of the host
        "list-processes": ("pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
                           "raise RuntimeError('pids ' + repr(pids))", ("RuntimeError: pids [2] (scene line 7)",)),
    }
    submitted = {case: submit(server, request(scene(body), case)) for case, (body, _) in cases.items()}
    alongside = submit(server, normal("alongside"))
    results = {case: poll(server, job_id, server.auth, timeout=120) for case, job_id in submitted.items()}
    finished = poll(server, alongside, server.auth, timeout=120)

    for case, (_, reasons) in cases.items():
        job = results[case]
        assert job["jobId"] == submitted[case]
        if case == "forkbomb":  # contained: how it ends depends on which process hit the limit first
            assert job["status"] in ("failed", "completed"), job
            if job["status"] == "failed":
                assert_failed(job, case, *reasons)
            continue
        assert_failed(job, case, *reasons)
        assert "CONNECTED" not in job["error"] and "READ " not in job["error"] and "WROTE" not in job["error"]
    assert "(scene line 6)" in results["read-db"]["error"]  # names the scene line of the open()
    assert_completed(finished, "normal-alongside")

    # nothing escaped to the host
    assert not checkout_file.exists() and not os.path.exists(usr_file)
    assert victim_video.is_file() and httpx.get(victim["result"]["video"]).status_code == 200
    # every reserve refunded: only the two normal renders were charged
    charged = victim["creditsCost"] + finished["creditsCost"] + (
        results["forkbomb"]["creditsCost"] if results["forkbomb"]["status"] == "completed" else 0)
    assert me_total(server) == CREDITS - charged
    # the fork bomb left no process behind and the server is healthy
    uids = {task_uid(server, results["forkbomb"]["jobId"])}
    assert min(uids) >= UID_BASE
    assert wait_no_uid(uids, server, timeout=5) == []
    health = httpx.get(f"{server.url}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["queue"] == {"queued": 0, "running": 0}
    # and it still renders
    assert_completed(poll(server, submit(server, normal("after")), server.auth), "normal-after")


def test_an_infinite_loop_times_out_and_a_growing_memory_bomb_hits_the_limit(make_server):
    server = make_server({"APPLIANCE_RENDER_TIMEOUT_S": "5", "APPLIANCE_TASK_MEMORY_MB": "256",
                          "APPLIANCE_CPU_SLOTS": "4"})
    server.cli("users", "create", "mallory", "--credits", str(CREDITS))
    server.auth = {"Authorization": f"Bearer {server.new_key('mallory', 'kodisc')['key']}"}
    started = time.time()
    spin = submit(server, request(scene("while True:\n    pass"), "spin"))
    # touches every page it gets (bytearray zero-fills), so the limit is met by real memory, not one huge ask
    hog = submit(server, request(scene("hog = []\nwhile True:\n    hog.append(bytearray(1 << 20))"), "memhog"))
    # children each under their own address-space limit, together far over the task's memory cgroup
    children = submit(server, request(scene(
        "import time\nfor _ in range(8):\n    if os.fork() == 0:\n        b = bytearray(100 << 20)\n"
        "        b[::4096] = b'1' * 25600\n        time.sleep(20)\n        os._exit(0)\n"
        "os.wait()\nraise RuntimeError('the children were not killed')"), "children"))
    hogged = poll(server, hog, server.auth, timeout=60)
    assert_failed(hogged, "memhog", "MemoryError", "out of memory", "memory limit exceeded (limit 256 MB)")
    assert_failed(poll(server, children, server.auth, timeout=60), "children", "memory limit exceeded (limit 256 MB)")
    spun = poll(server, spin, server.auth, timeout=60)
    assert_failed(spun, "spin", "timed out after 5 s")
    assert 5 <= time.time() - started < 30
    assert spun["durationMs"] >= 5000
    assert me_total(server) == CREDITS
    assert wait_no_uid({task_uid(server, spin), task_uid(server, hog), task_uid(server, children)}, server,
                       timeout=5) == []
    health = httpx.get(f"{server.url}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["queue"] == {"queued": 0, "running": 0}


FIND_PIPE = """import json, time
pipes = []
for name in os.listdir('/proc/self/fd'):
    try:
        if os.readlink('/proc/self/fd/' + name).startswith('pipe:'):
            pipes.append(int(name))
    except OSError:
        pass
assert pipes, 'no pipe'
"""


def test_a_forged_result_on_the_worker_pipe_does_not_complete_the_job(kodisc):
    # a result, and the worker's word that the task is over ("ended": the server would take in the outputs at
    # once): on the renderer's side of the relay both are dropped, never passed on
    forge = FIND_PIPE + ("for fd in pipes:\n"
                         "    os.write(fd, b'{\"type\": \"result\", \"result\": {\"files\": {}, \"meta\": {}}}\\n')\n"
                         "    os.write(fd, b'{\"type\": \"ended\", \"cpu_s\": 0, \"maxrss_kb\": 0}\\n')\n"
                         "os._exit(0)")
    job = poll(kodisc, submit(kodisc, request(scene(forge), "forged-result")), kodisc.auth)
    assert_failed(job, "forged-result", "worker exited with status 0 without a result",
                  "renderer result is missing its video output")
    assert me_total(kodisc) == CREDITS


def test_forged_files_are_not_published_as_a_video(kodisc):
    """The scene writes files under the output names and claims them as its result: nothing is published,
    billed or cached unless each file is what it claims (H.264 of the requested size, JPEG, WebVTT)."""
    forge = FIND_PIPE + (
        "for name in ('video.mp4', 'thumb.jpg', 'captions.vtt', 'image.png'):\n"
        "    open(name, 'wb').write(b'NOT A VIDEO: forged by scene code')\n"
        "line = json.dumps({'type': 'result', 'result': {'files': {'video': 'video.mp4', "
        "'thumbnail': 'thumb.jpg', 'captions': 'captions.vtt', 'image': 'image.png'}, 'meta': {}}}) + '\\n'\n"
        "for fd in pipes:\n"
        "    os.write(fd, line.encode())\n"
        "os._exit(0)")
    job = poll(kodisc, submit(kodisc, request(scene(forge), "forged-files")), kodisc.auth)
    assert_failed(job, "forged-files", "renderer output video.mp4 is not a valid h264 file",
                  "worker exited with status 0 without a result")
    assert me_total(kodisc) == CREDITS
    again = poll(kodisc, submit(kodisc, request(scene(forge), "forged-files")), kodisc.auth)
    assert again["status"] == "failed"  # and it was not cached as a success either


def test_a_forged_progress_stays_between_0_and_1(kodisc):
    forge = FIND_PIPE + ("for fd in pipes:\n"
                         "    os.write(fd, b'{\"type\": \"progress\", \"fraction\": 1e300, \"phase\": \"x\"}\\n')\n"
                         "time.sleep(1)\n"
                         "raise RuntimeError('after the forged progress')")
    job = poll(kodisc, submit(kodisc, request(scene(forge), "forged-progress")), kodisc.auth)
    assert_failed(job, "forged-progress", "RuntimeError: after the forged progress")
    shown = kodisc.job(job["jobId"])
    assert 0.0 <= shown["progress"] <= 1.0 and all(0.0 <= t["progress"] <= 1.0 for t in shown["tasks"]), shown
