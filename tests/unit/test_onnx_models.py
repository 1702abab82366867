"""The studio's own ONNX models in-process (issue #23): the sandboxed check's verdicts, a fixed-size model's map
resized back, the per-pixel parallax's geometry, the registry's manifest and the cache keys that follow a model.
The models are built by tests/tiny_models.py; the server path is tests/integration/test_studio_models.py."""
from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from appliance.errors import ApplianceError
from appliance.runtime.artifacts import Artifacts
from appliance.services.models import AddRequest, ModelRegistry
from appliance.services.pipelines.image import ImagePipeline, validate
from appliance.services.pipelines.image_video import VideoPipeline
from appliance.services.pipelines.image_video import validate as validate_video
from renderers.base import NullReporter
from renderers.image import onnx_models as om
from tests import tiny_models as tm

PLAIN = {"mean": [0, 0, 0], "std": [1, 1, 1]}


def check(tmp_path: Path, build, kind: str = "matte", **extra) -> dict:
    build(tmp_path / "model.onnx")
    return om.check({"model": "model.onnx", "kind": kind, **PLAIN, **extra}, tmp_path, NullReporter())["meta"]


@pytest.mark.parametrize("build, words", [
    (tm.not_onnx, "does not load as an ONNX model: [ONNXRuntimeError]"),
    (tm.grey_input, "input 'image' has shape 1×1×?×?; 1×3×H×W (an RGB image) is needed"),
    (tm.two_maps, "output 'mask' has shape 1×2×320×320 for a 1×3×320×320 input; one map (1×1×H×W) is needed"),
    (tm.nan_everywhere, "output 'mask' holds 102400 NaN or infinite values"),
    (lambda p: tm.redness(p, logits=True), "outside 0..1; if the model gives logits add it with --post sigmoid"),
])
def test_the_check_names_what_is_wrong(tmp_path, build, words):
    meta = check(tmp_path, build)
    assert meta["ok"] is False and words in meta["error"], meta
    assert str(tmp_path) not in meta["error"]  # the sandbox's paths are not the operator's business


def test_the_check_reports_the_signature(tmp_path):
    meta = check(tmp_path, tm.redness)
    assert meta["ok"] and meta["input_size"] is None and meta["run_size"] == [320, 320]
    assert meta["signature"]["output"] == {"name": "mask", "shape": [1, 1, None, None]}
    assert 0 <= meta["map_range"][0] < 0.01 and meta["map_range"][1] > 0.99  # the generated disc is red
    assert check(tmp_path, lambda p: tm.redness(p, logits=True), post="sigmoid")["ok"]
    fixed = check(tmp_path, tm.fixed_rectangle)
    assert fixed["input_size"] == [32, 32] and fixed["run_size"] == [32, 32]
    assert "fixed at 32×32" in check(tmp_path, tm.fixed_rectangle, input_size=64)["error"]
    depth = check(tmp_path, tm.depth_from_redness, kind="depth")
    assert depth["ok"] and depth["map_range"] == [0.0, 1.0] and depth["run_size"] == [384, 384]


def test_a_fixed_size_map_comes_back_at_the_pictures_size(tmp_path):
    tm.fixed_rectangle(tmp_path / "box.onnx")  # the box x 8..24, y 4..28 of 32
    rgb = np.full((300, 640, 3), 128, np.uint8)
    alpha = om.matte_alpha(tmp_path / "box.onnx", rgb, {"kind": "matte", **PLAIN, "name": "box"}, NullReporter())
    assert alpha is not None and alpha.shape == (300, 640)
    ys, xs = np.nonzero(alpha > 127)
    assert abs(xs.min() - 160) <= 12 and abs(xs.max() - 480) <= 12 and abs(ys.min() - 37) <= 6


def test_a_failing_model_falls_back_with_a_log_line(tmp_path):
    tm.nan_on_white(tmp_path / "flaky.onnx")
    report = NullReporter()
    white = np.full((64, 64, 3), 255, np.uint8)
    assert om.matte_alpha(tmp_path / "flaky.onnx", white, {"kind": "matte", **PLAIN, "name": "flaky"}, report) is None
    assert "classical matte used" in report.lines[-1]
    assert om.plate_depth(tmp_path / "missing.onnx", np.zeros((8, 8, 4), np.uint8), {"kind": "depth"},
                          report) is None
    assert "matte layers used" in report.lines[-1]


def _plate(w: int = 200, h: int = 120) -> np.ndarray:
    rng = np.random.default_rng(3)
    small = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.cvtColor(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2BGRA)


def test_parallax_moves_each_pixel_by_its_nearness():
    plate = _plate()
    view = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    move = np.array([[1.0, 0, 12.0], [0, 1.0, 0], [0, 0, 1]])  # the near things move 12 px right
    far = om.Depth(near=np.zeros((120, 200), np.float32), centre=(100, 60), fill=plate)
    still = om.parallax_frame(plate, far, view, move, (200, 120))
    assert np.abs(still.astype(int) - plate).max() <= 1  # nothing near: the camera's view alone
    near = np.zeros((120, 200), np.float32)
    near[40:80, 60:120] = 1
    near_depth = om.Depth(near=near, centre=(90, 60), fill=plate)
    moved = om.parallax_frame(plate, near_depth, view, move, (200, 120))
    inside = moved[50:70, 80:125].astype(int) - plate[50:70, 68:113]
    assert np.abs(inside).mean() < 3  # the near block arrived 12 px to the right
    assert np.abs(moved[10:30].astype(int) - plate[10:30]).max() <= 1  # the far rows stayed


def photo_file(tmp_path: Path) -> Path:
    out = io.BytesIO()
    Image.fromarray(np.full((60, 80, 3), 120, np.uint8)).save(out, "PNG")
    (tmp_path / "in.png").write_bytes(out.getvalue())
    return tmp_path / "in.png"


def installed(tmp_path: Path, kind: str, build) -> tuple[ModelRegistry, Artifacts]:
    artifacts = Artifacts(tmp_path / "artifacts")
    registry = ModelRegistry.beside(artifacts)
    add = AddRequest.from_params({"kind": kind, "source": "tiny.onnx", "mean": "0,0,0", "std": "1,1,1"})
    digest = artifacts.put(build(tmp_path / "tiny.onnx"))
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "model.onnx").write_bytes(artifacts.path(digest).read_bytes())
    request = add.check_input(digest)
    registry.install(request, om.check(request, work, NullReporter())["meta"], artifacts)
    return registry, artifacts


def test_the_model_joins_the_cache_key_and_the_task_input(tmp_path):
    artifacts = Artifacts(tmp_path / "artifacts")
    payload = {"settings": validate({}), "input_path": str(photo_file(tmp_path))}
    without = ImagePipeline(artifacts).plan(payload)[0]
    registry, _ = installed(tmp_path, "matte", tm.redness)
    entry = registry.get("matte")
    assert entry is not None
    with_model = ImagePipeline(artifacts).plan(payload)[0]
    assert with_model.cache_key != without.cache_key and "matte_model" not in without.input
    assert with_model.input["artifacts"]["matte.onnx"] == entry["sha256"]
    assert with_model.input["matte_model"]["file"] == "matte.onnx" and with_model.mem_mb >= without.mem_mb
    video = {"settings": validate_video({}), "first_path": str(photo_file(tmp_path))}
    assert "depth_model" not in VideoPipeline(artifacts).plan(video)[0].input  # only a depth model reaches video
    registry.remove(entry["name"])
    assert ImagePipeline(artifacts).plan(payload)[0].cache_key == without.cache_key


def test_the_registry_keeps_one_of_each_kind_and_refuses_a_changed_file(tmp_path):
    registry, artifacts = installed(tmp_path, "depth", tm.depth_from_redness)
    entry = registry.get("depth")
    assert entry is not None and entry["name"] == "tiny" and entry["runtime"] == "onnxruntime"
    doc = json.loads(registry.manifest_path.read_text())
    assert doc["version"] == 1 and doc["models"][0]["sha256"] == entry["sha256"]
    with pytest.raises(ApplianceError, match="a depth model \\(tiny\\) is installed already"):
        registry.ensure_free("other", "depth")
    with pytest.raises(ApplianceError, match="model refused: the matte"):
        registry.install({}, {"ok": False, "error": "the matte's values run from -3 to 4"}, artifacts)
    path = registry.file(entry)
    path.unlink()
    path.write_bytes(b"swapped")
    with pytest.raises(ApplianceError, match="does not match its manifest"):
        registry.for_task("depth", artifacts, "depth")


@pytest.mark.parametrize("params, words", [
    ({"kind": "text2video"}, "kind must be one of: matte, depth, img2img"),
    ({"kind": "matte", "name": "../x"}, "name must be"),
    ({"kind": "matte", "mean": "1,2"}, "mean must be three numbers"),
    ({"kind": "matte", "std": "1,0,1"}, "std must be three numbers above 0"),
    ({"kind": "matte", "input_size": "4"}, "input-size must be a whole number from 8 to 2048"),
    ({"kind": "matte", "post": "relu"}, "post must be one of"),
])
def test_add_requests_are_checked_before_a_byte_is_taken(params, words):
    with pytest.raises(ApplianceError, match=words.replace("(", "\\(")):
        AddRequest.from_params(params)
