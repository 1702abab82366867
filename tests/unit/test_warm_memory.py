"""The warm model parents' memory as admission counts it (runtime/warm_memory.py): held from a model task's start
for as long as the zygote keeps each parent, by its own rules, and nothing for other tasks or with none kept."""
from __future__ import annotations

import pytest

from appliance.runtime import admission
from appliance.runtime.executors.model_parent import LOADED_IDLE_S
from appliance.runtime.warm_memory import IMPORTS_MB, WarmMemory
from appliance.settings import SettingsError, load

SHA = "a" * 64


def model(size_mb: int) -> dict:
    return {"model": {"sha256": SHA, "size": size_mb << 20, "device": "any", "files": {}}}


def test_held_while_the_zygote_keeps_the_parents():
    now = [1000.0]
    warm = WarmMemory(idle_s=600, clock=lambda: now[0])
    assert warm.held_mb() == 0
    warm.started("manim", model(100), None)  # not a model task: nothing kept for it
    assert warm.held_mb() == 0
    warm.started("image.img2img", model(1000), None)  # a CPU task: the imports and its float32 weights
    assert warm.held_mb() == IMPORTS_MB + 2000
    now[0] += LOADED_IDLE_S + 1  # the loaded parent is gone, the imports parent stays
    assert warm.held_mb() == IMPORTS_MB
    now[0] += 600
    assert warm.held_mb() == 0
    warm.started("image.img2img", model(1000), 0)  # granted a GPU: it loads onto its card, nothing kept here
    assert warm.held_mb() == IMPORTS_MB
    warm.started("image.img2img", model(3000), None)  # 6 GB of float32 weights: too large to keep
    assert warm.held_mb() == IMPORTS_MB
    assert WarmMemory(idle_s=0).held_mb() == 0
    off = WarmMemory(idle_s=0)
    off.started("image.img2img", model(10), None)  # no warm parent at all (a Dask executor, or the setting 0)
    assert off.held_mb() == 0


def test_admission_counts_it_beside_the_running_tasks():
    running = admission.Running.of([])
    warm = WarmMemory(idle_s=600)
    warm.started("image.img2img", model(1000), None)
    running.used.mem_mb += warm.held_mb()  # as Scheduler.admit does
    assert running.used.mem_mb == IMPORTS_MB + 2000


def test_the_setting_is_bounded(tmp_path):
    none = tmp_path / "none.toml"
    assert load(none, environ={}).model_warm_idle_s == 600.0
    assert load(none, environ={"APPLIANCE_MODEL_WARM_IDLE_S": "0"}).model_warm_idle_s == 0.0
    with pytest.raises(SettingsError, match="model_warm_idle_s"):
        load(none, environ={"APPLIANCE_MODEL_WARM_IDLE_S": "-5"})
