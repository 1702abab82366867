"""The warm model parent's life, in-process (appliance/runtime/executors/model_parent.py): started by the first
model task (which forks cold), ready once imported with one thread, closed after its idle time, never started
when the idle time is 0, and a spawn it cannot make fails (and the parent is replaced) rather than being retried
cold; the loaded parent's reading of a task's model (hostile inputs left alone) and a kept pipeline's picture.
A real spawn, through the zygote and the sandbox, is tests/integration/test_models_warm.py."""
from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

from appliance.runtime.childenv import child_env
from appliance.runtime.executors.model_parent import MODEL_RENDERERS, WarmModels


@pytest.fixture(autouse=True)
def thread_caps(monkeypatch):
    """The zygote's environment caps BLAS and OpenMP pools (childenv.py); without them torch's import starts
    threads and the parent refuses to serve (it counts its threads before it says ready)."""
    for key, value in child_env().items():
        if key.endswith("_NUM_THREADS"):
            monkeypatch.setenv(key, value)


def _ready(models: WarmModels, timeout: float = 120) -> None:
    assert models.parent is not None
    deadline = time.monotonic() + timeout
    while not models.parent.poll():
        assert models.parent.error is None, models.parent.error
        assert time.monotonic() < deadline, "the warm parent never said ready"
        time.sleep(0.05)


def _exit_status(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_the_parent_starts_on_the_first_model_task_and_goes_when_idle():
    models = WarmModels(idle_s=0.5)
    assert models.spawn(object(), {"renderer": "image.img2img"}, []) == (None, None)  # this one forks cold
    parent = models.parent
    _ready(models)
    assert models.wake_in(None) is not None and models.wake_in(None) <= 0.6  # the zygote wakes to close it
    time.sleep(0.6)
    models.expire()
    assert models.parent is None
    assert _exit_status(parent.pid) == 0  # it saw end of file and exited


def test_a_spawn_it_cannot_make_fails_and_the_parent_is_replaced():
    models = WarmModels(idle_s=60)
    models.spawn(object(), {}, [])
    _ready(models)
    first = models.parent
    read, write = os.pipe()
    try:
        pid, failure = models.spawn(object(), {"renderer": "image.img2img"}, [read])  # 1 fd: not a task's 3
    finally:
        os.close(read)
        os.close(write)
    assert pid is None and failure == "ValueError: a spawn carries 3 or 4 fds, not 1"
    assert models.parent is None  # killed: the next model task starts a new one
    assert _exit_status(first.pid) in (0, -signal.SIGKILL)  # gone: end of file or the kill, whichever came first
    models.close()


def test_no_parent_when_the_idle_time_is_zero():
    models = WarmModels(idle_s=0)
    assert models.spawn(object(), {}, []) == (None, None)
    assert models.parent is None and models.wake_in(None) is None and models.wake_in(0.5) == 0.5
    assert MODEL_RENDERERS == {"image.img2img"}  # never model.check: an ONNX check needs onnxruntime


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("task-input")
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


SPEC = {"sha256": "ab" * 32, "size": 1 << 20, "device": "any",
        "files": {"model_index.json": "img2img.0.json",
                  "unet/diffusion_pytorch_model.safetensors": "img2img.1.safetensors"}}


@pytest.mark.parametrize("change, kept", [
    ({}, True),
    ({"env": {"CUDA_VISIBLE_DEVICES": "0"}}, False),  # granted a GPU: it loads onto its card itself
    ({"renderer": "image.render"}, False),
    ({"model": {**SPEC, "device": "gpu"}}, False),
    ({"model": {**SPEC, "sha256": "../../etc"}}, False),
    ({"model": {**SPEC, "files": {"../../etc/shadow": "img2img.0.json"}}}, False),  # a name out of the folder
    ({"model": {**SPEC, "files": {"model_index.json": "/etc/shadow"}}}, False),  # a staged name not the registry's
    ({"model": {**SPEC, "files": {"a//b.json": "img2img.0.json"}}}, False),
    ({"model": {**SPEC, "size": "1"}}, False),
    ({"model": "not a spec"}, False),
    ({"input": b"not json"}, False),
])
def test_the_model_of_a_task_is_read_from_its_input_and_checked(change, kept):
    """What the loaded parent would open, read from the task's own input memfd (pread: the worker still reads it
    whole); anything but a CPU img2img task with the registry's own names is left alone."""
    from appliance.runtime.executors.model_pipeline import fits, model_of

    request = {"renderer": change.get("renderer", "image.img2img"), "workdir": "/data/work/t1",
               "env": change.get("env", {"CUDA_VISIBLE_DEVICES": ""})}
    body = change.get("input") or json.dumps({"prompt": "x", "model": change.get("model", SPEC)}).encode()
    fd = _memfd(body)
    try:
        got = model_of(request, [-1, -1, fd])
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # the worker reads the input from its start
    finally:
        os.close(fd)
    assert (got is not None) == kept, got
    if kept:
        assert got == {"sha256": SPEC["sha256"], "files": SPEC["files"], "size": 1 << 20, "workdir": "/data/work/t1"}
        assert fits(got) and not fits({**got, "size": 3 << 30})  # float32: twice a float16 folder, 4 GiB at most


def test_a_kept_pipeline_gives_the_fresh_loads_picture_run_after_run(tmp_path):
    """Tasks fork from one kept pipeline object: nothing of a run may change the next (the scheduler's state is
    set per call), so a kept pipeline's picture is a fresh load's."""
    from renderers.image import img2img
    from renderers.image.onnx_models import test_picture
    from tests import tiny_diffusers as td

    folder = td.build(tmp_path / "tiny", "sd")

    def picture(pipe, cls_name):
        return img2img.generate(pipe, cls_name, test_picture(64), "make it red", 0.55, 4, 7.5, 7, 32)[0]

    kept = img2img.load(folder, "cpu")
    first, second = picture(*kept), picture(*kept)
    fresh = picture(*img2img.load(folder, "cpu"))
    assert np.array_equal(first, second) and np.array_equal(first, fresh)
