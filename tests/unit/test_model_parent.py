"""The warm model parent's life, in-process (appliance/runtime/executors/model_parent.py): started by the first
model task (which forks cold), ready once imported with one thread, closed after its idle time, never started
when the idle time is 0, and a spawn it cannot make fails (and the parent is replaced) rather than being retried
cold. A real spawn, through the zygote and the sandbox, is tests/integration/test_models_warm.py."""
from __future__ import annotations

import os
import time

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
    assert _exit_status(first.pid) != 0
    models.close()


def test_no_parent_when_the_idle_time_is_zero():
    models = WarmModels(idle_s=0)
    assert models.spawn(object(), {}, []) == (None, None)
    assert models.parent is None and models.wake_in(None) is None and models.wake_in(0.5) == 0.5
    assert MODEL_RENDERERS == {"image.img2img"}  # never model.check: an ONNX check needs onnxruntime
