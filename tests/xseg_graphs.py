"""Small ONNX graphs with the XSeg occluders' interface, built in the tests (no real weights here).

Interface (FaceFusion's ``face_masker``): input ``input`` (batch, 256, 256, 3) float32, BGR 0..1,
NHWC; first output (batch, 256, 256, 1), the mask. Built with ``onnx.helper`` at opset 17.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SIZE = 256
SQUARE = (96, 160)  # rows/columns [96, 160) of the 256 mask are 0 ("covered") in square_graph


def _save(path: Path, nodes, inits, batch) -> Path:
    import onnx
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, SIZE, SIZE, 3])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, SIZE, SIZE, 1])
    graph = helper.make_graph(nodes, "xseg_stand_in", [inp], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def _const(name: str, value: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ascontiguousarray(value), name)


def square_graph(path: Path, batch="batch", square: tuple[int, int] = SQUARE) -> Path:
    """Mask 1 everywhere except the square ``square`` x ``square`` (0); ignores the image (but reads it)."""
    from onnx import helper

    mask = np.ones((1, SIZE, SIZE, 1), np.float32)
    mask[:, square[0]:square[1], square[0]:square[1]] = 0
    nodes = [
        helper.make_node("Slice", ["input", "s0", "s1", "ax"], ["ch0"]),
        helper.make_node("Mul", ["ch0", "zero"], ["z"]),
        helper.make_node("Add", ["z", "mask"], ["output"]),
    ]
    inits = [_const("s0", np.array([0], np.int64)), _const("s1", np.array([1], np.int64)),
             _const("ax", np.array([3], np.int64)), _const("zero", np.zeros((), np.float32)),
             _const("mask", mask)]
    return _save(path, nodes, inits, batch)


def conv_weights(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded 3x3 conv weights (1, 3, 3, 3) and bias (1,) for conv_graph."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 3, 3, 3, generator=g) * 2).numpy(), (torch.randn(1, generator=g)).numpy()


def conv_graph(path: Path, seed: int = 0, batch="batch") -> Path:
    """sigmoid(conv3x3(input)) with seeded weights: NHWC -> NCHW -> conv -> sigmoid -> NHWC."""
    from onnx import helper

    w, b = conv_weights(seed)
    nodes = [
        helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["conv"], ["sig"]),
        helper.make_node("Transpose", ["sig"], ["output"], perm=[0, 2, 3, 1]),
    ]
    return _save(path, nodes, [_const("w", w), _const("b", b)], batch)


def conv_reference(bgr_nhwc: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """What conv_graph computes, in torch: (N, 256, 256, 3) -> (N, 256, 256)."""
    w, b = conv_weights(seed)
    y = torch.nn.functional.conv2d(bgr_nhwc.permute(0, 3, 1, 2), torch.from_numpy(w), torch.from_numpy(b), padding=1)
    return torch.sigmoid(y)[:, 0]
