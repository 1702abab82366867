"""GPUs across a Dask cluster, as the appliance counts and grants them (runtime/executors/dask.py): each worker's
own inventory, trimmed to what it declared, numbered across the cluster; a grant pinned to the GPU's worker with
the GPU's index there. The cluster itself is exercised in tests/integration/test_dask_gpu.py."""
from __future__ import annotations

import pytest

from appliance.runtime.executors import dask_worker
from appliance.runtime.executors.base import TaskSpec
from appliance.runtime.executors.dask import DaskExecutor, cluster_gpus, resources_for
from appliance.runtime.resources import Gpu, GpuPool, Grant
from appliance.runtime.sandbox import Limits

H200 = Gpu(0, "NVIDIA H200", 143771, nvenc_sessions=0, nvenc_reason="h264_nvenc failed: no encode device")
A4000 = Gpu(1, "NVIDIA RTX A4000", 16376, nvenc_sessions=2, nvdec=True, compute_slots=2,
            nvenc_reason="probed: 3 sessions refused")
LIMITS = Limits(cpu_seconds=1, mem_mb=512, wall_seconds=1, fsize_mb=1, nofile=1, nproc=1, cpu=1.0)


def spec(**grant) -> TaskSpec:
    return TaskSpec(task_id="j.0", renderer="test.encode", input={}, limits=LIMITS, mem_mb=300, **grant)


def test_a_workers_gpus_are_numbered_across_the_cluster_and_trimmed_to_what_it_declared():
    numbers: dict = {}
    declared = {"tcp://b:1": {"CPU": 8, "MEM": 9000, "GPU": 2, "NVENC": 1},
                "tcp://a:1": {"CPU": 4, "MEM": 9000, "GPU": 1}}
    inventories = {"tcp://a:1": (H200,), "tcp://b:1": (H200, A4000)}
    gpus = cluster_gpus(declared, inventories, numbers)
    assert [(g.index, g.worker, g.device) for g in gpus] == [(0, "tcp://a:1", 0), (1, "tcp://b:1", 0),
                                                             (2, "tcp://b:1", 1)]
    # b declared GPU=2 (compute slots) and NVENC=1: H200 takes 1 slot, the A4000 the other, and 1 of its 2 sessions
    assert [(g.compute_slots, g.nvenc_sessions) for g in gpus] == [(1, 0), (1, 0), (1, 1)]
    assert gpus[2].describe().startswith("GPU 2 (GPU 1 of worker tcp://b:1) NVIDIA RTX A4000: 16376 MB, 1 compute")
    assert gpus[2].as_json()["worker"] == "tcp://b:1" and gpus[2].as_json()["localIndex"] == 1
    # worker a leaves, c joins: b's GPUs keep their numbers, c's are new ones (a grant never changes meaning)
    later = cluster_gpus({"tcp://b:1": declared["tcp://b:1"], "tcp://c:1": {"GPU": 1}},
                         {"tcp://b:1": (H200, A4000), "tcp://c:1": (A4000,)}, numbers)
    assert [(g.index, g.worker, g.device) for g in later] == [(1, "tcp://b:1", 0), (2, "tcp://b:1", 1),
                                                              (3, "tcp://c:1", 1)]
    assert cluster_gpus({"tcp://d:1": {"CPU": 4}}, {"tcp://d:1": (A4000,)}, numbers)[0].compute_slots == 0


def test_an_inventory_travels_as_json():
    assert Gpu.from_json(A4000.as_json()) == A4000


def test_the_pool_follows_the_cluster_and_keeps_what_running_tasks_hold():
    gpus = cluster_gpus({"tcp://a:1": {"GPU": 1, "NVENC": 2}, "tcp://b:1": {"GPU": 2}},
                        {"tcp://a:1": (A4000,), "tcp://b:1": (A4000,)}, {})
    pool = GpuPool(gpus)
    assert pool.grant("t1", compute=True, nvenc=True) == Grant(gpu=0, compute=True, nvenc=True)  # a: has NVENC
    assert pool.grant("t2", compute=True) == Grant(gpu=1, compute=True)  # b: a's single slot is taken
    pool.update(gpus[1:])  # worker a left: its GPU with it
    assert pool.in_use() == {1: {"compute": 1, "nvenc": 0}}
    pool.release("t1")  # the task on the GPU that left ends: nothing to give back, nothing breaks
    pool.update(gpus)  # a is back (a worker that returns gets new numbers; here the same, to check the counts)
    assert pool.in_use() == {0: {"compute": 0, "nvenc": 0}, 1: {"compute": 1, "nvenc": 0}}


def test_the_request_names_what_was_granted():
    assert resources_for(spec()) == {"CPU": 1.0, "MEM": 300.0}
    assert resources_for(spec(gpu=2, nvenc=True)) == {"CPU": 1.0, "MEM": 300.0, "NVENC": 1.0}
    assert resources_for(spec(gpu=2, gpu_compute=True)) == {"CPU": 1.0, "MEM": 300.0, "GPU": 1.0}


def test_a_grant_is_pinned_to_its_worker_with_the_gpus_index_there(tmp_path):
    executor = DaskExecutor("tcp://127.0.0.1:1", data_dir=tmp_path)
    executor.gpus = {g.index: g for g in cluster_gpus({"tcp://b:1": {"GPU": 2, "NVENC": 2}},
                                                      {"tcp://b:1": (H200, A4000)}, {})}
    payload: dict = {}
    placed, where = executor._place(spec(gpu=1, nvenc=True, gpu_compute=True), payload)
    assert where == {"workers": ["tcp://b:1"], "allow_other_workers": False}
    assert payload == {"gpu": 1, "nvenc": True, "gpu_compute": True} and placed.gpu == 1
    # the GPU left between the grant and the submit: an NVENC-only grant runs without it ...
    payload = {}
    placed, where = executor._place(spec(gpu=7, nvenc=True), payload)
    assert (placed.gpu, placed.nvenc, where, payload) == (None, False, {}, {})
    # ... a task that needs the GPU cannot start (the scheduler fails it, with the credits refunded)
    with pytest.raises(RuntimeError, match="left the cluster"):
        executor._place(spec(gpu=7, gpu_compute=True), {})


def test_a_worker_honours_only_grants_of_its_own_gpus(monkeypatch):
    monkeypatch.setattr(dask_worker, "_gpus", (H200, A4000))
    assert dask_worker.granted({"gpu": 1, "nvenc": True, "gpu_compute": True}) == {
        "gpu": 1, "nvenc": True, "gpu_compute": True}
    for hostile in ({"gpu": 5, "nvenc": True}, {"gpu": True}, {"gpu": "0"}, {"gpu": -1}, {}):
        assert dask_worker.granted(hostile) == {"gpu": None, "nvenc": False, "gpu_compute": False}
    assert dask_worker.granted({"gpu": 0, "nvenc": "yes"})["nvenc"] is False


def test_identical_outputs_of_two_tasks_on_a_worker_survive_each_others_release(tmp_path, monkeypatch):
    """Two attempts rendering the same bytes put the same artifact: the first to send its outputs must not
    remove the file the second is about to read (it did: FileNotFoundError on a 2-worker run of 8 identical
    encodes)."""
    class Stub:
        artifacts = dask_worker.ClaimedArtifacts(tmp_path / "artifacts")

    monkeypatch.setattr(dask_worker, "_refs", dask_worker.Counter())
    monkeypatch.setenv("APPLIANCE_WORKER_DIR", str(tmp_path))
    for task in ("a", "b"):
        (tmp_path / task).mkdir()
        (tmp_path / task / "video.mp4").write_bytes(b"same render")
    first = {"outputs": {"video.mp4": Stub.artifacts.put(tmp_path / "a" / "video.mp4")}}
    second = {"outputs": {"video.mp4": Stub.artifacts.put(tmp_path / "b" / "video.mp4")}}
    assert dask_worker._take_outputs(Stub, first) == {"video.mp4": b"same render"}
    assert dask_worker._take_outputs(Stub, second) == {"video.mp4": b"same render"}
    assert not Stub.artifacts.has(first["outputs"]["video.mp4"])  # the last claim gone: so is the file
    # an input staged for two tasks, one of which also produced it: removed only with the last claim
    digests = dask_worker._stage_in(Stub, {"in.png": b"same render"})
    again = dask_worker._stage_in(Stub, {"photo.png": b"same render"})
    dask_worker._release(Stub, list(digests.values()))
    assert Stub.artifacts.has(again["photo.png"])
    dask_worker._release(Stub, list(again.values()))
    assert not Stub.artifacts.has(again["photo.png"]) and not dask_worker._refs
