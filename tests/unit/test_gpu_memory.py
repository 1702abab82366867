"""GPU memory accounting and CPU-allowed models on a free GPU (issue #23), in-process: the pool grants a GPU only
where a task's memory need fits beside the other grants, admission plans exactly the grants the scheduler then
makes (a GPU task that does not fit waits, and holds back later GPU tasks; one no GPU could ever hold is
refused), a CPU-allowed (``any``) model's task asks for an optional GPU with its need, and the registry's
estimate of that need. GPUs are the dataclass only (no probe): nothing here runs on a card."""
from __future__ import annotations

import json

import pytest

from appliance.runtime import admission
from appliance.runtime.resources import Capacity, Gpu, GpuPool
from appliance.services import models
from appliance.services.pipelines import generative

SMALL = Gpu(0, "NVIDIA T4", 8192, compute_slots=2)


def task(i: int, *, gpu: int = 1, need: int | None = None, optional: bool = False, renderer: str = "image.img2img",
         user: str = "u", cpu: float = 1.0) -> dict:
    data = {**({"gpu_mem_mb": need} if need is not None else {}), **({"gpu_optional": True} if optional else {})}
    return {"id": f"j{i}.0", "job_id": f"j{i}", "renderer": renderer, "input": json.dumps(data), "cpu": cpu,
            "mem_mb": 1000, "gpu": gpu, "user_id": user, "priority": 0, "max_parallel": None,
            "job_created_at": f"2026-12-07T16:00:0{i}"}


def test_the_pool_grants_compute_only_where_the_memory_fits():
    pool = GpuPool((SMALL,))
    first = pool.grant("a", compute=True, mem_mb=6000)
    assert (first.gpu, first.compute) == (0, True) and pool.free_memory(0) == 2192
    assert pool.grant("b", compute=True, mem_mb=6000).gpu is None  # a slot is free; the memory is not
    assert not pool.can_grant(6000) and pool.can_grant(2000)
    optional = pool.grant("c", optional_compute=True, mem_mb=3000)
    assert (optional.gpu, optional.compute) == (None, False)  # an `any` task: the CPU, no wait
    small = pool.grant("d", optional_compute=True, mem_mb=2000)
    assert (small.gpu, small.compute) == (0, True) and pool.memory_in_use() == {0: 8000}
    assert pool.grant("e", optional_compute=True).gpu is None  # both slots taken, whatever the memory
    pool.release("a")
    assert pool.memory_in_use() == {0: 2000} and pool.grant("b", compute=True, mem_mb=6000).gpu == 0
    pool.release("b")
    pool.release("d")
    assert pool.memory_in_use() == {0: 0} and pool.in_use() == {0: {"compute": 0, "nvenc": 0}}


def test_the_pool_places_a_need_on_the_gpu_that_holds_it():
    pool = GpuPool((Gpu(0, "small", 4096), Gpu(1, "large", 24576)))
    assert pool.grant("a", compute=True, mem_mb=10000).gpu == 1  # the small card is free but too small
    assert pool.grant("b", compute=True, mem_mb=3000).gpu == 0
    assert pool.grant("c", compute=True, mem_mb=100).gpu is None  # one slot each: both taken
    assert pool.could_ever_hold(24576) and not pool.could_ever_hold(24577)


def test_admission_runs_two_models_that_exceed_the_card_one_after_the_other():
    pool = GpuPool((SMALL,))
    capacity = Capacity(cpu=8, mem_mb=64000, gpus=(SMALL,))
    big = [task(1, need=5000), task(2, need=5000)]
    assert admission.plan(big, admission.Running(), capacity, gpus=pool) == [(big[0], "start")]
    small = [task(1, need=4000), task(2, need=4000)]  # both fit: two slots, 8000 of 8192 MB
    assert [d for _, d in admission.plan(small, admission.Running(), capacity, gpus=pool)] == ["start", "start"]
    # what runs counts: the pool holds a running grant of 5000 MB
    pool.grant("running.0", compute=True, mem_mb=5000)
    waiting = [task(3, need=5000), task(4, need=1000, user="v"), task(5, gpu=0, optional=True, need=9000)]
    got = admission.plan(waiting, admission.Running(), capacity, gpus=pool)
    # the 5000 MB task waits and holds back the later 1000 MB GPU task (no starving it with small models);
    # the CPU-allowed task never waits: it starts, on the CPU (its need fits no GPU now)
    assert got == [(waiting[2], "start")]
    assert admission.gpu_ask(waiting[2]) == {"compute": False, "optional_compute": True, "nvenc": False,
                                             "mem_mb": 9000}
    # the plan was tried on a copy: the scheduler's own pool is unchanged
    assert pool.memory_in_use() == {0: 5000}


def test_a_need_no_gpu_holds_is_refused_with_the_sizes():
    capacity = Capacity(cpu=8, mem_mb=64000, gpus=(SMALL,))
    huge = task(1, need=9000)
    assert admission.plan([huge], admission.Running(), capacity, gpus=GpuPool((SMALL,))) == [(huge, "gpu_too_small")]
    assert admission.too_small(huge, capacity) == ("this task needs a GPU with 9000 MB of memory and the largest GPU "
                                                  "the appliance can grant has 8192 MB")
    # no GPU at all: refused as before, whatever its need
    assert admission.plan([huge], admission.Running(), Capacity(cpu=8, mem_mb=64000)) == [(huge, "no_gpu")]
    # a task that says no need counts its slot only (the renderers that use a GPU but name no model)
    plain = task(2, renderer="test.encode")
    assert admission.gpu_ask(plain) == {"compute": True, "optional_compute": False, "nvenc": True, "mem_mb": 0}


@pytest.mark.parametrize("bad", ['{"gpu_mem_mb": "lots"}', '{"gpu_mem_mb": true}', "not json", "[1]", ""])
def test_a_malformed_need_counts_as_none(bad):
    assert admission.gpu_mem_need({**task(1), "input": bad}) == 0


def test_the_estimate_counts_weights_activations_and_context():
    sd15 = models.gpu_need_mb(2 * 1_066_000_000, 512)  # UNet 860M + text encoder 123M + VAE 84M, float16
    sdxl = models.gpu_need_mb(2 * 3_470_000_000, 1024)  # UNet 2.6B + two text encoders 0.8B + VAE 84M
    assert (sd15, sdxl) == (2034 + 1024 + 768, 6619 + 4096 + 768)
    assert 3000 < sd15 < 4500 and 10000 < sdxl < 13000  # the published figures: about 3.5 GB and 11 GB
    assert models.gpu_need_mb(0, 32) == 16 + 768  # a tiny model: its activations at 64² at least, and the context
    entry = {"size": 2 << 30, "run_size": [768, 768]}  # an entry written before the field: its files' size
    assert models.entry_gpu_mb(entry) == 2048 + 2304 + 768
    assert models.entry_gpu_mb({**entry, "gpu_mem_mb": 5000}) == 5000


def test_the_gpu_memory_option_is_validated():
    got = models.AddRequest.from_params({"kind": "img2img", "name": "m", "gpu_mem_mb": "6000"})
    assert got.gpu_mem_mb == 6000 and got.folder_check_input({"model_index.json": "d"})["gpu_mem_mb"] == 6000
    assert "gpu_mem_mb" not in models.AddRequest.from_params({"kind": "img2img", "name": "m"}).folder_check_input({})
    for bad in ("0", "-5", "1e4", "6000MB", str(models.MAX_GPU_MB + 1)):
        with pytest.raises(models.ApplianceError, match="gpu-memory must be a whole number of MB"):
            models.AddRequest.from_params({"kind": "img2img", "name": "m", "gpu_mem_mb": bad})


def test_create_job_is_told_why_a_gpu_only_model_cannot_run():
    entry = {"name": "sd15", "device": "gpu", "gpu_mem_mb": 9000}
    none = Capacity(cpu=2, mem_mb=8000)
    assert generative.gpu_refusal(entry, none, "use classic or pro") == \
        "The model sd15 needs a GPU and this appliance has none to grant: use classic or pro"
    small = Capacity(cpu=2, mem_mb=8000, gpus=(SMALL,))
    assert generative.gpu_refusal(entry, small, "use style=preserve") == (
        "The model sd15 needs a GPU with 9000 MB of memory and the largest GPU of this appliance has 8192 MB: "
        "use style=preserve")
    assert generative.gpu_refusal({**entry, "gpu_mem_mb": 8000}, small, "x") is None
    assert generative.gpu_refusal({**entry, "device": "any"}, none, "x") is None  # the CPU is always there
    assert generative.gpu_refusal(None, none, "x") is None
    no_slots = Capacity(cpu=2, mem_mb=8000, gpus=(Gpu(0, "NVIDIA T4", 8192, compute_slots=0),))
    assert "has none to grant" in (generative.gpu_refusal(entry, no_slots, "x") or "")


def test_onnx_runs_on_cuda_only_when_granted_and_the_build_has_it(tmp_path, monkeypatch):
    """The ONNX models' provider follows the grant: CUDA first only where the task was granted a GPU and the
    installed onnxruntime offers the CUDA provider (this machine's build does not: faked here, as a GPU probe)."""
    import onnxruntime as ort

    from renderers.base import NullReporter
    from renderers.image import onnx_models
    from tests import tiny_models as tm

    model = tm.redness(tmp_path / "red.onnx")
    check_input = {"model": "red.onnx", "kind": "matte", "mean": [0, 0, 0], "std": [1, 1, 1]}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert onnx_models.providers() == ["CPUExecutionProvider"]
    meta = onnx_models.check(check_input, model.parent, NullReporter())["meta"]
    assert meta["ok"] and (meta["device"], meta["gpu"]) == ("cpu", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # granted, but this build has no CUDA provider: the CPU
    assert "CUDAExecutionProvider" not in ort.get_available_providers()
    assert onnx_models.providers() == ["CPUExecutionProvider"]
    meta = onnx_models.check(check_input, model.parent, NullReporter())["meta"]
    assert meta["ok"] and (meta["device"], meta["gpu"]) == ("cpu", "1")
    real = ort.get_available_providers
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real()])
    assert onnx_models.providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # an onnxruntime-gpu build, no GPU granted: the CPU
    assert onnx_models.providers() == ["CPUExecutionProvider"]


@pytest.mark.parametrize("device", ["gpu", "any"])
def test_an_img2img_task_carries_its_gpu_need(tmp_path, device):
    """The planned task: its GPU need from the manifest (the check counted the parameters), an optional GPU for a
    CPU-allowed model, and RAM for float32 weights on the CPU; none of it in the cache key."""
    from appliance.services.pipelines.image import ImagePipeline, validate
    from tests import tiny_diffusers as td
    from tests.unit.test_img2img import install

    artifacts, _, entry = install(tmp_path, td.build(tmp_path / "tiny", "sd"), device)
    assert entry["gpu_mem_from"] == "estimate" and entry["check"]["device"] == "cpu"
    assert entry["check"]["params"] > 0 and entry["run_size"] == [32, 32]
    assert entry["gpu_mem_mb"] == models.gpu_need_mb(2 * entry["check"]["params"], 32)
    picture = tmp_path / "in.png"
    picture.write_bytes(b"\x89PNG fake bytes: planning never reads them")
    settings = validate({"model": "tiny", "render_mode": "creative"}, "tiny")
    gen, _ = ImagePipeline(artifacts).plan({"settings": settings, "input_path": str(picture), "job_id": "j1"})
    weights = entry["size"] >> 20
    assert gen.input["gpu_mem_mb"] == entry["gpu_mem_mb"]
    assert (gen.gpu, gen.input.get("gpu_optional", False)) == ((1, False) if device == "gpu" else (0, True))
    assert gen.mem_mb == generative.BASE_MB[device] + (weights if device == "gpu" else 2 * weights)
    ask = admission.gpu_ask({"renderer": gen.renderer, "gpu": gen.gpu, "input": json.dumps(gen.input)})
    assert ask == {"compute": device == "gpu", "optional_compute": device == "any", "nvenc": False,
                   "mem_mb": entry["gpu_mem_mb"]}
    again = ImagePipeline(artifacts).plan({"settings": settings, "input_path": str(picture), "job_id": "j2"})[0]
    assert again.cache_key == gen.cache_key and entry["sha256"] in json.dumps(gen.input)
