"""The studio's img2img model in-process (issue #23): the sandboxed check's verdicts on tiny diffusers folders
(SD img2img, with a ControlNet, InstructPix2Pix), the prompt reaching the model (another prompt, another
picture; the same seed, the same picture), what a tar of a folder may hold, and how a job is planned: a
GPU-only model's task asks for a GPU (refused at admission where there is none) and counts the model's size.
The server path is tests/integration/test_studio_img2img.py."""
from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from appliance.errors import ApplianceError
from appliance.runtime import admission
from appliance.runtime.artifacts import Artifacts
from appliance.runtime.resources import Capacity
from appliance.services import model_folders
from appliance.services.models import AddRequest, ModelRegistry
from appliance.services.pipelines.image import ImagePipeline, validate
from appliance.store import ids
from renderers.base import NullReporter
from renderers.image import img2img, onnx_models
from tests import tiny_diffusers as td


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {kind: td.build(root / kind, kind) for kind in ("sd", "controlnet", "pix2pix")}


def staged(folder: Path, workdir: Path) -> dict[str, str]:
    """The folder's files flat in a workdir, as the scheduler stages a task's artifacts."""
    workdir.mkdir(parents=True, exist_ok=True)
    files = {}
    for i, rel in enumerate(model_folders.wanted(folder)):
        files[rel] = f"img2img.{i}{Path(rel).suffix}"
        shutil.copy(folder / rel, workdir / files[rel])
    return files


def check(folder: Path, workdir: Path, device: str = "any") -> dict:
    files = staged(folder, workdir)
    return onnx_models.check({"kind": "img2img", "files": files, "device": device}, workdir, NullReporter())["meta"]


@pytest.mark.parametrize("kind, pipeline", [("sd", "StableDiffusionImg2ImgPipeline"),
                                            ("controlnet", "StableDiffusionControlNetImg2ImgPipeline"),
                                            ("pix2pix", "StableDiffusionInstructPix2PixPipeline")])
def test_the_check_loads_and_runs_each_family(folders, tmp_path, kind, pipeline):
    meta = check(folders[kind], tmp_path)
    assert meta["ok"], meta
    assert (meta["pipeline"], meta["native"], meta["device"]) == (pipeline, 32, "cpu")
    assert meta["output_shape"] == [128, 128, 3] and 0 <= meta["output_range"][0] <= meta["output_range"][1] <= 1
    assert meta["prompt_tokens"] == 14  # 16 tokens at most, start and end marks excluded: the model's tokenizer
    assert meta["controlnet"] == (kind == "controlnet") and meta["instruct"] == (kind == "pix2pix")


def test_the_check_names_what_is_wrong(folders, tmp_path, monkeypatch):
    broken = tmp_path / "broken"
    shutil.copytree(folders["sd"], broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    assert "does not load as a diffusers StableDiffusionImg2ImgPipeline" in check(broken, tmp_path / "w1")["error"]
    other = tmp_path / "other"
    shutil.copytree(folders["sd"], other)
    (other / "model_index.json").write_text('{"_class_name": "MyOwnPipeline"}')
    assert "pipeline 'MyOwnPipeline' is not one the appliance runs" in check(other, tmp_path / "w2")["error"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # a GPU granted that this CPU build of torch cannot use
    assert check(folders["sd"], tmp_path / "w3", device="gpu")["error"] == (
        "this model is GPU-only and no GPU is usable here (CUDA_VISIBLE_DEVICES=1 was granted, but this torch "
        "build sees no CUDA device)")


def test_the_prompt_reaches_the_model_and_the_seed_fixes_the_picture(folders, tmp_path):
    pipe, cls_name = img2img.load(img2img.assemble(tmp_path, staged(folders["sd"], tmp_path)), "cpu")
    rgb = onnx_models.test_picture(96)

    def run(prompt: str, seed: int = 7, strength: float = 0.55):
        return img2img.generate(pipe, cls_name, rgb, prompt, strength, 4, 7.5, seed, 64)

    red, meta = run("make it red")
    assert red.shape == rgb.shape and meta["prompt"] == "make it red" and meta["prompt_tokens"] == 9
    assert meta["size"] == [64, 64] and meta["steps_run"] == 2
    assert np.array_equal(run("make it red")[0], red)  # a retry: the same picture
    assert not np.array_equal(run("make it blue")[0], red)  # the words change the picture
    assert not np.array_equal(run("make it red", seed=8)[0], red)
    assert run("make it red", strength=0.8)[1]["steps_run"] == 3
    assert img2img.seed_of("a", "b") == img2img.seed_of("a", "b") != img2img.seed_of("a", "c")


def tar_of(members: list[tuple[str, bytes | None, bytes]]) -> bytes:
    """(name, bytes or None for a symlink, link target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data, target in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, target.decode()
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.parametrize("members, words", [
    ([("model_index.json", b"{}", b""), ("../escape.json", b"{}", b"")], "'../escape.json' is not a plain relative"),
    ([("/etc/x.json", b"{}", b"")], "'/etc/x.json' is not a plain relative"),
    ([("model_index.json", b"{}", b""), ("unet/link.json", None, b"/etc/passwd")], "is a link or a special file"),
    ([("model_index.json", b"{}", b""), ("unet/diffusion_pytorch_model.bin", b"x", b"")], "is a pickle"),
    ([("model_index.json", b"{}", b""), ("run.sh", b"x", b"")], "only .json, .txt, .safetensors, .model files"),
    ([("unet/config.json", b"{}", b"")], "no model_index.json at its top"),
    ([("model_index.json", b"{}", b""), ("model_index.json", b"{}", b"")], "model_index.json is in the tar twice"),
])
def test_a_hostile_tar_is_refused_by_name(tmp_path, members, words):
    body = tmp_path / "body.tar"
    body.write_bytes(tar_of(members))
    with pytest.raises(ApplianceError) as err:
        model_folders.take_in(body, Artifacts(tmp_path / "artifacts"), 1 << 30)
    assert err.value.status == 422 and words in str(err.value)
    assert not (tmp_path.parent / "escape.json").exists()  # nothing is ever written by a member's name
    assert sorted(p.name for p in tmp_path.iterdir()) in (["body.tar"], ["artifacts", "body.tar"])
    (tmp_path / "junk.tar").write_bytes(b"not a tar" * 100)
    with pytest.raises(ApplianceError, match="not a tar of the folder"):
        model_folders.take_in(tmp_path / "junk.tar", Artifacts(tmp_path / "artifacts"), 1 << 30)


def install(tmp_path: Path, folder: Path, device: str) -> tuple[Artifacts, ModelRegistry, dict]:
    """The folder taken in and installed as the server does it, with the check's real report."""
    artifacts = Artifacts(tmp_path / "artifacts")
    body = tmp_path / "body.tar"
    body.write_bytes(b"".join(model_folders.tar_stream(folder, model_folders.wanted(folder))))
    files = model_folders.take_in(body, artifacts, 1 << 30)
    add = AddRequest.from_params({"kind": "img2img", "name": "tiny", "device": device, "steps": "4"})
    check_input = add.folder_check_input(files)
    work = tmp_path / "work"
    work.mkdir()
    for name, digest in check_input["artifacts"].items():
        shutil.copy(artifacts.path(digest), work / name)
    report = onnx_models.check({**check_input, "device": "any"}, work, NullReporter())["meta"]
    registry = ModelRegistry.beside(artifacts)
    return artifacts, registry, registry.install(check_input, report, artifacts)


def test_a_job_with_the_model_is_planned_as_two_tasks(folders, tmp_path):
    artifacts, registry, entry = install(tmp_path, folders["sd"], "gpu")
    assert entry["runtime"] == "diffusers" and entry["device"] == "gpu" and entry["files"]["model_index.json"]
    assert (registry.root / entry["sha256"] / "unet" / "config.json").is_file()
    picture = tmp_path / "in.png"
    picture.write_bytes(b"\x89PNG fake bytes: planning never reads them")
    settings = validate({"model": "tiny", "render_mode": "freeform", "custom_instructions": "brass"}, "tiny")
    gen, render = ImagePipeline(artifacts).plan({"settings": settings, "input_path": str(picture), "job_id": "j1"})
    assert (gen.renderer, gen.gpu, render.depends_on) == ("image.img2img", 1, [0])
    assert gen.mem_mb == 2048 + (entry["size"] >> 20) and gen.input["strength"] == 0.8
    assert gen.input["prompt"] == "brass" and "adjust" not in render.input and render.input["model"] == "classic"
    assert render.input["link_inputs"] == [{"task": ids.task_id("j1", 0), "file": "image",
                                            "as": "generated.png"}]
    assert entry["sha256"] == gen.input["model"]["sha256"] and set(gen.input["artifacts"]) > {"input.png"}
    again = ImagePipeline(artifacts).plan({"settings": settings, "input_path": str(picture), "job_id": "j2"})
    assert [t.cache_key for t in again] == [gen.cache_key, render.cache_key]  # the job's id is not in the keys
    other = validate({**settings, "custom_instructions": "chrome"}, "tiny")
    assert ImagePipeline(artifacts).plan({"settings": other, "input_path": str(picture), "job_id": "j3"})[
        0].input["seed"] != gen.input["seed"]

    # a box with no GPU: admission refuses the task (the job fails with the reason), never runs it on the CPU
    task = {"cpu": gen.cpu, "mem_mb": gen.mem_mb, "gpu": gen.gpu, "user_id": "u", "job_id": "j1", "priority": 0,
            "max_parallel": None, "job_created_at": "2026"}
    assert admission.plan([task], admission.Running(), Capacity(cpu=2, mem_mb=8000)) == [(task, "no_gpu")]

    registry.remove("tiny")
    assert not (registry.root / entry["sha256"]).exists()
    with pytest.raises(ApplianceError, match="'tiny' is no longer installed"):
        ImagePipeline(artifacts).plan({"settings": settings, "input_path": str(picture), "job_id": "j4"})


def test_a_creative_video_redraws_its_first_frame_with_the_prompt(folders, tmp_path):
    """video.php with the model installed: style creative puts the img2img task first (video.php's prompt as its
    text, creative's strength) and the camera move reads its picture, linked; style preserve, or no model, plans
    the one video task exactly as before (the same cache key)."""
    from appliance.services.pipelines.image_video import VideoPipeline
    from appliance.services.pipelines.image_video import validate as video_settings

    picture, last = tmp_path / "in.png", tmp_path / "last.png"
    picture.write_bytes(b"\x89PNG fake bytes: planning never reads them")
    last.write_bytes(b"\x89PNG other fake bytes")
    bare = Artifacts(tmp_path / "bare")

    def plan(artifacts: Artifacts, job_id: str = "v1", **data) -> list:
        settings = video_settings({"prompt": "brass at dusk", "duration": 4, **data})
        paths = {"first_path": str(picture), **({"last_path": str(last)} if data.get("video_mode") else {})}
        return VideoPipeline(artifacts).plan({"settings": settings, "job_id": job_id, **paths})

    before = {style: plan(bare, style=style) for style in ("preserve", "creative")}
    assert [len(tasks) for tasks in before.values()] == [1, 1]
    assert all("link_inputs" not in t[0].input and t[0].input["first"] == "first.png" for t in before.values())

    artifacts, _, entry = install(tmp_path, folders["sd"], "any")
    preserve = plan(artifacts, style="preserve")
    assert [t.cache_key for t in preserve] == [before["preserve"][0].cache_key]  # untouched
    gen, video = plan(artifacts, style="creative")
    assert (gen.renderer, gen.gpu, video.renderer, video.depends_on) == ("image.img2img", 0, "image.video", [0])
    assert gen.input["prompt"] == "brass at dusk" and gen.input["strength"] == img2img.STRENGTH["creative"]
    assert gen.input["model"]["sha256"] == entry["sha256"] and gen.input["input"] == "first.png"
    assert video.input["first"] == "generated.png" and "first.png" not in video.input["artifacts"]
    assert video.input["link_inputs"] == [{"task": ids.task_id("v1", 0), "file": "image", "as": "generated.png"}]
    assert video.input["generated_by"] == gen.cache_key and video.cache_key != before["creative"][0].cache_key
    again = plan(artifacts, "v2", style="creative")
    assert [t.cache_key for t in again] == [gen.cache_key, video.cache_key]  # the job's id is not in the keys
    other = plan(artifacts, "v3", style="creative", prompt="chrome")
    assert other[0].input["seed"] != gen.input["seed"] and other[1].cache_key != video.cache_key
    # a transition: the first frame is redrawn, the last one is the upload
    gen, video = plan(artifacts, "v4", style="creative", video_mode="transition")
    assert video.input["first"] == "generated.png" and video.input["last"] == "last.png" \
        and "last.png" in video.input["artifacts"]


def test_names_and_options_are_checked():
    with pytest.raises(ApplianceError, match="classic and pro are RenderCAD's own models"):
        AddRequest.from_params({"kind": "img2img", "name": "Classic"})
    with pytest.raises(ApplianceError, match="device must be one of: gpu, any"):
        AddRequest.from_params({"kind": "img2img", "device": "tpu"})
    with pytest.raises(ApplianceError, match="steps must be a whole number from 1 to 150"):
        AddRequest.from_params({"kind": "img2img", "steps": "0"})
    assert AddRequest.from_params({"kind": "img2img"}).device == "gpu"  # never a CPU run by surprise
    assert AddRequest.from_params({"kind": "matte"}).device == "any"
