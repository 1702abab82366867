import os
import time

from appliance.runtime import resources

from appliance import settings
from appliance.delivery.outputs import Store
from appliance.runtime.scheduler import Scheduler

FAKE_SMI = """#!/bin/sh
# stands in for nvidia-smi on a machine without a GPU
echo "0, NVIDIA H100 80GB HBM3, 81559"
echo "1, NVIDIA RTX A4000, 16376"
"""


def test_gpus_are_detected_from_nvidia_smi(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    cap = resources.measure(settings.load(environ={}))
    assert [g.name for g in cap.gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA RTX A4000"]
    assert cap.gpu == 2 and cap.nvenc == 2 * resources.NVENC_SESSIONS_PER_GPU
    assert cap.as_json()["gpus"][0]["memoryMb"] == 81559
    limited = resources.measure(settings.load(environ={"APPLIANCE_GPUS": "1", "APPLIANCE_CPU_SLOTS": "7"}))
    assert (limited.gpu, limited.cpu) == (1, 7.0)


def test_no_nvidia_smi_means_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert resources.detect_gpus() == ()


def test_a_failing_nvidia_smi_means_no_gpu(tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    smi.chmod(0o755)
    assert resources.detect_gpus(str(smi)) == ()


def test_fair_order_interleaves_users_and_respects_priority():
    def task(user, n, prio=0):
        return {"user_id": user, "priority": prio, "job_created_at": f"2026-01-01T00:00:{n:02d}.000Z", "id": f"{user}{n}"}
    ready = [task("a", i) for i in range(5)] + [task("b", 10), task("c", 20, prio=5)]
    order = [t["id"] for t in Scheduler.fair_order(ready, {"a": 1})]
    assert order[0] == "c20"  # priority first
    assert order[1] == "b10"  # then the user with fewer running tasks
    assert order[2:] == ["a0", "a1", "a2", "a3", "a4"]


def test_retention_sweeper_removes_only_old_outputs(tmp_path):
    store = Store(tmp_path)
    for job, age_days in (("old", 91), ("new", 1)):
        d = store.job_dir(job)
        d.mkdir()
        (d / "video.mp4").write_bytes(b"x")
        then = time.time() - age_days * 86400
        os.utime(d, (then, then))
    assert store.sweep(90 * 86400) == ["old"]
    assert store.job_dir("new").exists() and not store.job_dir("old").exists()
