"""Tiny ONNX models built with onnx.helper for the model registry's tests (issue #23): nothing is downloaded.

Every model reads an RGB picture normalised with mean 0 and std 1 (x / 255), as the tests add them
(--mean 0,0,0 --std 1,1,1), so what each one does to a picture is plain arithmetic."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET, IR_VERSION = 17, 8  # what every onnxruntime of the last years reads


def _image(name: str = "image", size: tuple | None = None, channels: int = 3):
    h, w = size or ("H", "W")
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, channels, h, w])


def _save(path: Path, nodes: list, inputs: list, outputs: list, inits: list | None = None) -> Path:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=inits or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def _out(name: str = "mask", channels: int = 1):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, channels, None, None])


def redness(path: Path, *, logits: bool = False, gain: float = 20.0) -> Path:
    """A matte = sigmoid(gain · (r − (g + b)/2 − 0.3)): red things are the subject, grey and blue ones are not.
    ``logits``: without the sigmoid (values far outside 0..1: the registry wants --post sigmoid)."""
    weight = numpy_helper.from_array(np.array([gain, -gain / 2, -gain / 2], np.float32).reshape(1, 3, 1, 1), "w")
    bias = numpy_helper.from_array(np.array([-0.3 * gain], np.float32), "b")
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["logit" if not logits else "mask"])]
    if not logits:
        nodes.append(helper.make_node("Sigmoid", ["logit"], ["mask"]))
    return _save(path, nodes, [_image()], [_out()], [weight, bias])


def fixed_rectangle(path: Path, side: int = 32, box: tuple[int, int, int, int] = (8, 4, 24, 28)) -> Path:
    """A fixed side×side input; its matte is the box (x0, y0, x1, y1, in its own pixels), whatever the picture
    (the picture still flows through the graph: 0 × its mean is added)."""
    x0, y0, x1, y1 = box
    mask = np.zeros((1, 1, side, side), np.float32)
    mask[..., y0:y1, x0:x1] = 1
    nodes = [helper.make_node("ReduceMean", ["image"], ["m"], keepdims=1),
             helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Add", ["z", "rect"], ["mask"])]
    inits = [numpy_helper.from_array(np.zeros((1,), np.float32), "zero"), numpy_helper.from_array(mask, "rect")]
    return _save(path, nodes, [_image(size=(side, side))], [_out()], inits)


def nan_everywhere(path: Path) -> Path:
    """sqrt(−|x| − 1): NaN for every picture."""
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"]), helper.make_node("Abs", ["c"], ["a"]),
             helper.make_node("Neg", ["a"], ["n"]), helper.make_node("Sub", ["n", "one"], ["s"]),
             helper.make_node("Sqrt", ["s"], ["mask"])]
    inits = [numpy_helper.from_array(np.ones((1, 3, 1, 1), np.float32), "w"),
             numpy_helper.from_array(np.ones((1,), np.float32), "one")]
    return _save(path, nodes, [_image()], [_out()], inits)


def nan_on_white(path: Path) -> Path:
    """The redness matte, plus 0 · log(0.95 − max(x)): fine on the check's generated picture (never brighter
    than 230), NaN on a picture with a pure white pixel. A model that passes the check and fails on a job."""
    base = redness(path)
    model = onnx.load(str(base))
    g = model.graph
    g.node[-1].output[0] = "sig"
    g.node.extend([helper.make_node("ReduceMax", ["image"], ["mx"], keepdims=0),
                   helper.make_node("Sub", ["limit", "mx"], ["room"]), helper.make_node("Log", ["room"], ["l"]),
                   helper.make_node("Mul", ["l", "zero"], ["nan_or_zero"]),
                   helper.make_node("Add", ["sig", "nan_or_zero"], ["mask"])])
    g.initializer.extend([numpy_helper.from_array(np.array(0.95, np.float32), "limit"),
                          numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def two_maps(path: Path) -> Path:
    """A 1×2×H×W output: not one map."""
    weight = numpy_helper.from_array(np.full((2, 3, 1, 1), 0.1, np.float32), "w")
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"]), helper.make_node("Sigmoid", ["c"], ["mask"])]
    return _save(path, nodes, [_image()], [_out(channels=2)], [weight])


def grey_input(path: Path) -> Path:
    """A 1×1×H×W (grey) input: the wrong signature."""
    weight = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"]), helper.make_node("Sigmoid", ["c"], ["mask"])]
    return _save(path, nodes, [_image(channels=1)], [_out()], [weight])


def depth_from_redness(path: Path) -> Path:
    """A depth map (1×H×W, MiDaS-style: no channel axis) of r − 0.4 (g + b): a red thing stands in front of a
    grey backdrop, a blue one behind it."""
    weight = numpy_helper.from_array(np.array([1.0, -0.4, -0.4], np.float32).reshape(1, 3, 1, 1), "w")
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"]),
             helper.make_node("Squeeze", ["c", "axis"], ["depth"])]
    inits = [weight, numpy_helper.from_array(np.array([1], np.int64), "axis")]
    out = helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, None, None])
    return _save(path, nodes, [_image()], [out], inits)


def not_onnx(path: Path) -> Path:
    path.write_bytes(b"this is a text file, not a model\n" * 10)
    return path
