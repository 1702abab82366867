import os
import time

import pytest

from appliance import settings
from appliance.datadir import DataDir
from appliance.runtime import resources
from appliance.runtime.executors.base import TaskSpec
from appliance.runtime.sandbox import Limits
from appliance.runtime.sandbox.namespaces import gpu_nodes
from renderers import encoder

FAKE_SMI = """#!/bin/sh
# stands in for nvidia-smi on a machine without a GPU
echo "0, NVIDIA H100 80GB HBM3, 81559"
echo "1, NVIDIA RTX A4000, 16376"
"""


# The encoder probe's stand-in: ffmpeg's command line; how many h264_nvenc encoders may open at once on each
# GPU (-gpu N) and whether h264_cuvid decodes there. Anything else is a real ffmpeg run.
FAKE_PROBE = """#!/usr/bin/env python3
import os, sys
args = sys.argv[1:]
gpu = args[args.index("-gpu") + 1] if "-gpu" in args else "?"
if "h264_cuvid" in args:
    if gpu == "1":
        sys.exit(0)
    sys.stderr.write("[h264_cuvid @ 0x1] cuvidCreateDecoder failed -> CUDA_ERROR_NO_DEVICE\\n")
    sys.exit(1)
if "h264_nvenc" in args:
    limit = {"0": 0, "1": 2}.get(gpu, 0)
    if args.count("h264_nvenc") <= limit:
        sys.exit(0)
    sys.stderr.write("[h264_nvenc @ 0x2] OpenEncodeSessionEx failed: no encode device (2): (no details)\\n")
    sys.stderr.write("Error initializing output stream 0:0\\n")
    sys.exit(1)
os.execvp("ffmpeg", ["ffmpeg", *args])
"""


def _exe(path, text):
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_gpus_are_detected_from_nvidia_smi(tmp_path, monkeypatch):
    _exe(tmp_path / "nvidia-smi", FAKE_SMI)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    # Probed with the real ffmpeg: this machine has no GPU, so no encoder opens and the reason says why.
    cap = resources.measure(settings.load(environ={}))
    assert [g.name for g in cap.gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA RTX A4000"]
    assert cap.gpu == 2 and cap.nvenc == 0 and cap.gpu_slots == 2
    assert all(g.nvenc_reason.startswith("h264_nvenc failed: ") and len(g.nvenc_reason) > 20 for g in cap.gpus)
    assert cap.as_json()["gpus"][0]["memoryMb"] == 81559
    limited = resources.measure(settings.load(environ={"APPLIANCE_GPUS": "1", "APPLIANCE_CPU_SLOTS": "7",
                                                       "APPLIANCE_NVENC_SESSIONS": "0"}))
    assert (limited.gpu, limited.cpu) == (1, 7.0)


def test_nvenc_sessions_and_nvdec_come_from_the_probe(tmp_path, monkeypatch):
    _exe(tmp_path / "nvidia-smi", "#!/bin/sh\necho '0, NVIDIA H200, 143771'\necho '1, NVIDIA RTX A4000, 16376'\n")
    probe = _exe(tmp_path / "probe", FAKE_PROBE)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    cap = resources.measure(settings.load(environ={"APPLIANCE_ENCODER_PROBE": str(probe)}))
    h200, a4000 = cap.gpus
    assert (h200.nvenc_sessions, h200.nvdec) == (0, False)
    assert h200.nvenc_reason == "h264_nvenc failed: [h264_nvenc @ 0x2] OpenEncodeSessionEx failed: no encode " \
                                "device (2): (no details)"
    assert (a4000.nvenc_sessions, a4000.nvdec) == (2, True) and "3 sessions refused" in a4000.nvenc_reason
    assert h200.describe().startswith("GPU 0 NVIDIA H200: 143771 MB, 1 compute slot(s), NVENC 0 (h264_nvenc failed:")
    assert cap.as_json()["gpus"][1]["nvencSessions"] == 2 and cap.nvenc == 2
    # config overrides what was probed, per GPU; nvenc_sessions trusts a figure without probing
    tuned = resources.measure(settings.load(environ={
        "APPLIANCE_ENCODER_PROBE": str(probe), "APPLIANCE_GPU_OVERRIDES": "1:nvenc_sessions=1,compute_slots=3"}))
    assert (tuned.gpus[1].nvenc_sessions, tuned.gpus[1].compute_slots, tuned.gpu_slots) == (1, 3, 4)
    assert tuned.gpus[1].nvenc_reason == "config gpu_overrides"
    trusted = resources.measure(settings.load(environ={"APPLIANCE_ENCODER_PROBE": str(probe),
                                                       "APPLIANCE_NVENC_SESSIONS": "4"}))
    assert [g.nvenc_sessions for g in trusted.gpus] == [4, 4]


def test_bad_gpu_overrides_are_refused():
    for text in ("x:nvenc_sessions=1", "0:sessions=1", "0:nvenc_sessions=-1", "0:nvenc_sessions"):
        with pytest.raises(settings.SettingsError):
            resources.parse_overrides(text)
    assert resources.parse_overrides(" 0:nvdec=0 ; 2:memory_mb=100 ") == {0: {"nvdec": 0}, 2: {"memory_mb": 100}}


def test_the_pool_never_grants_an_encoder_that_is_not_there():
    pool = resources.GpuPool((resources.Gpu(0, "NVIDIA H200", 143771, nvenc_sessions=0),
                              resources.Gpu(1, "NVIDIA RTX A4000", 16376, nvenc_sessions=2)))
    grants = [pool.grant(f"t{i}", nvenc=True) for i in range(4)]
    assert [(g.gpu, g.nvenc) for g in grants] == [(1, True), (1, True), (None, False), (None, False)]
    pool.release("t0")
    assert pool.grant("t4", nvenc=True) == resources.Grant(gpu=1, nvenc=True)
    # compute: the GPU whose encoder is free first, so one task holds both on one GPU
    pool.release("t1")
    both = pool.grant("t5", compute=True, nvenc=True)
    assert both == resources.Grant(gpu=1, compute=True, nvenc=True)  # t4 holds one session, t1's came back
    assert pool.in_use()[1] == {"compute": 1, "nvenc": 2}
    other = pool.grant("t6", optional_compute=True)
    assert other == resources.Grant(gpu=0, compute=True) and pool.free_compute() == 0
    assert pool.grant("t7", optional_compute=True) == resources.Grant()  # none free: runs on the CPU path
    for task in ("t4", "t5", "t6", "t7", "unknown"):
        pool.release(task)
    assert pool.in_use() == {0: {"compute": 0, "nvenc": 0}, 1: {"compute": 0, "nvenc": 0}}


def test_the_grant_reaches_the_task_as_its_environment():
    limits = Limits(cpu_seconds=1, mem_mb=1, wall_seconds=1, fsize_mb=1, nofile=1, nproc=1)
    plain = TaskSpec(task_id="j.0", renderer="test.encode", input={}, limits=limits)
    assert plain.device_env() == {"CUDA_VISIBLE_DEVICES": "", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    granted = TaskSpec(task_id="j.0", renderer="test.encode", input={}, limits=limits, gpu=1, nvenc=True)
    assert granted.device_env() == {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                                    "RENDER_NVENC": "1"}
    grant = encoder.EncoderGrant.from_env(granted.device_env())
    assert grant == encoder.EncoderGrant(nvenc=True, gpu="1")
    assert encoder.video_codec_args(grant)[:2] == ["-c:v", "h264_nvenc"]
    assert encoder.video_codec_args(encoder.EncoderGrant())[:4] == ["-c:v", "libx264", "-preset", "veryfast"]
    assert gpu_nodes(None) == []  # no grant: no /dev/nvidia* bound into the sandbox


def test_no_nvidia_smi_means_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert resources.detect_gpus() == ()


def test_a_failing_nvidia_smi_means_no_gpu(tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    smi.chmod(0o755)
    assert resources.detect_gpus(str(smi)) == ()


def test_retention_sweeper_removes_only_old_outputs(tmp_path):
    store = DataDir(tmp_path)
    for job, age_days in (("old", 91), ("new", 1)):
        d = store.job_dir(job)
        d.mkdir()
        (d / "video.mp4").write_bytes(b"x")
        then = time.time() - age_days * 86400
        os.utime(d, (then, then))
    assert store.sweep(90 * 86400) == ["old"]
    assert store.job_dir("new").exists() and not store.job_dir("old").exists()
