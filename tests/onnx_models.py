"""Small ONNX graphs for the ``onnx`` kind's tests, built with :mod:`onnx.helper` (no torch).

A *threshold graph* scores a tile's mean intensity ``x`` against a threshold ``t`` as two
classes, ``[t - x, x - t]`` (``dark``, ``bright``): the argmax is ``bright`` exactly when
``x > t``, and a tie (``x == t``, both scores 0) goes to the first class, ``dark``, like the
threshold rule. The graph computes in its input type: with float32 (the default) ``x`` is first
rounded to float32 by the caller, so the builder insists on a threshold that float32 represents
exactly, and the graph then agrees with ``float32(x) > t`` bit for bit; with float64 it agrees
with ``x > t`` for any float64 ``t``. Subtraction of two floats is exact in sign (``a - b`` is
positive iff ``a > b``, with gradual underflow), which is what makes these claims hold.

The other builders make the malformed graphs the error tests feed the kind. Every builder writes
the model to ``path`` (checked with :func:`onnx.checker.check_model` first) and returns ``path``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 17
"""The ai.onnx opset of every test graph (ReduceMean still takes ``axes`` as an attribute)."""
IR_VERSION = 8

_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


def _save(graph: onnx.GraphProto, path: Path | str) -> Path:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="satpipe-tests",
    )
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    onnx.save(model, path)
    return path


def _threshold_const(threshold: float, dtype: np.dtype) -> onnx.TensorProto:
    value = np.array([threshold], dtype=dtype)
    if float(value[0]) != threshold:
        raise ValueError(f"threshold {threshold!r} is not exactly representable in {dtype}")
    return helper.make_tensor("threshold", _ELEM[dtype], [1], value.tolist())


def _score_nodes(x: str, out: str = "scores") -> list[onnx.NodeProto]:
    """``out = concat([threshold - x, x - threshold], axis=1)`` for ``x`` of shape (N, 1)."""
    return [
        helper.make_node("Sub", ["threshold", x], ["dark"]),
        helper.make_node("Sub", [x, "threshold"], ["bright"]),
        helper.make_node("Concat", ["dark", "bright"], [out], axis=1),
    ]


def threshold_graph(
    path: Path | str,
    threshold: float,
    *,
    dtype: type[np.floating] = np.float32,
    batch_dim: str | int = "N",
) -> Path:
    """Features ``(N, 1)`` (mean intensity) -> scores ``(N, 2)`` = ``[t - x, x - t]``.

    Args:
        path: where to write the model.
        threshold: ``t``; for float32 it must be exactly representable in float32.
        dtype: the input, threshold and output type: float32 or float64.
        batch_dim: the declared batch dimension (a name, or a number for a fixed batch).

    Returns:
        ``path``.
    """
    dt = np.dtype(dtype)
    elem = _ELEM[dt]
    graph = helper.make_graph(
        _score_nodes("features"),
        "threshold",
        [helper.make_tensor_value_info("features", elem, [batch_dim, 1])],
        [helper.make_tensor_value_info("scores", elem, [batch_dim, 2])],
        [_threshold_const(threshold, dt)],
    )
    return _save(graph, path)


def pixel_mean_graph(
    path: Path | str,
    bands: int | None,
    size: int | None,
    threshold: float,
) -> Path:
    """Pixels ``(N, bands, size, size)`` -> their mean over bands and pixels -> two scores.

    ``bands`` or ``size`` None declares that dimension dynamic. The mean is a float32
    ``ReduceMean``, so tests keep tile means well away from the threshold.
    """
    dt = np.dtype(np.float32)
    dims = ["N", bands or "bands", size or "height", size or "width"]
    nodes = [
        helper.make_node("ReduceMean", ["pixels"], ["mean4"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Flatten", ["mean4"], ["mean"], axis=1),
        *_score_nodes("mean"),
    ]
    graph = helper.make_graph(
        nodes,
        "pixel_mean",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2])],
        [_threshold_const(threshold, dt)],
    )
    return _save(graph, path)


def two_input_graph(path: Path | str) -> Path:
    """Two inputs ``a`` and ``b`` (N, 1) -> scores ``(N, 2)`` = ``[a, b]``."""
    graph = helper.make_graph(
        [helper.make_node("Concat", ["a", "b"], ["scores"], axis=1)],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 1]),
        ],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2])],
    )
    return _save(graph, path)


def int64_input_graph(path: Path | str, threshold: float = 1024.0) -> Path:
    """An int64 ``(N, 1)`` input, cast to float32, then the threshold scores."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["features"], ["x"], to=TensorProto.FLOAT),
            *_score_nodes("x"),
        ],
        "int64_input",
        [helper.make_tensor_value_info("features", TensorProto.INT64, ["N", 1])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2])],
        [_threshold_const(threshold, np.dtype(np.float32))],
    )
    return _save(graph, path)


def _linear_graph(path: Path | str, name: str, columns: int, classes: int) -> Path:
    """Features ``(N, columns)`` -> ``features @ W`` with ``W`` of shape (columns, classes)."""
    weights = np.arange(columns * classes, dtype=np.float32).reshape(columns, classes)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "weights"], ["scores"])],
        name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", columns])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", classes])],
        [helper.make_tensor("weights", TensorProto.FLOAT, weights.shape, weights.ravel())],
    )
    return _save(graph, path)


def wide_features_graph(path: Path | str, columns: int = 3) -> Path:
    """Expects ``columns`` feature columns (the error tests declare one feature)."""
    return _linear_graph(path, "wide_features", columns, 2)


def three_class_graph(path: Path | str) -> Path:
    """Features ``(N, 1)`` -> three scores per tile (the error tests declare two classes)."""
    return _linear_graph(path, "three_classes", 1, 3)


def rank1_output_graph(path: Path | str) -> Path:
    """Features ``(N, 1)`` -> one score per tile, shape ``(N,)``: not one score per class."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [-1])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["features", "shape"], ["scores"])],
        "rank1_output",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"])],
        [shape],
    )
    return _save(graph, path)


def not_onnx(path: Path | str, size: int = 512, seed: int = 0) -> Path:
    """Random bytes (seeded) in a file named like a model."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).bytes(size))
    return path


# --- per-pixel (segmentation) graphs: (N, C, H, W) float32 in, (N, K, H, W) scores out ---------


def _conv(name: str, x: str, w: np.ndarray, *, pad: int) -> tuple[onnx.NodeProto, list]:
    """A Conv node ``x * w + b`` (``w`` of shape (out, in, k, k), zero bias) and its weights."""
    init = [
        helper.make_tensor(f"{name}_w", TensorProto.FLOAT, w.shape, w.ravel().tolist()),
        helper.make_tensor(f"{name}_b", TensorProto.FLOAT, [w.shape[0]], [0.0] * w.shape[0]),
    ]
    node = helper.make_node(
        "Conv",
        [x, f"{name}_w", f"{name}_b"],
        [name],
        pads=[pad] * 4,
        kernel_shape=list(w.shape[2:]),
    )
    return node, init


def segment_graph(
    path: Path | str,
    bands: int | None,
    classes: int,
    *,
    size: int | None = None,
    batch_dim: str | int = "N",
    softmax: bool = False,
    hidden: int = 8,
    layers: int = 2,
    seed: int = 0,
    elem: int = TensorProto.FLOAT,
) -> Path:
    """A small fully convolutional segmenter, ``(N, bands, H, W)`` -> ``(N, classes, H, W)``.

    ``layers`` 3x3 convolutions (pad 1) with ReLU, then a 1x1 convolution to ``classes``
    channels (logits), optionally a Softmax over axis 1. The output is named ``scores``.

    Args:
        path: where to write the model.
        bands: the input's channel count (None: dynamic, the graph still needs ``bands`` weights,
            so a dynamic-band graph is built for 3 bands).
        classes: K, the output channels.
        size: a fixed window side (H = W), or None for dynamic H and W.
        batch_dim: the batch dimension (a name, or a number for a fixed batch).
        softmax: end in ``Softmax(axis=1)`` (probabilities) instead of logits.
        hidden: the width of the 3x3 stack.
        layers: its depth.
        seed: seeds the weights (normal, scaled by 1/sqrt(fan-in)).
        elem: the input's element type; anything but float is cast to float first.
    """
    rng = np.random.default_rng(seed)
    width = bands or 3
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    x = "pixels"
    if elem != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["pixels"], ["pixels_f"], to=TensorProto.FLOAT))
        x = "pixels_f"
    channels = width
    for i in range(layers):
        w = (rng.standard_normal((hidden, channels, 3, 3)) / np.sqrt(9 * channels)).astype(
            np.float32
        )
        node, init = _conv(f"conv{i}", x, w, pad=1)
        nodes += [node, helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"])]
        inits += init
        x, channels = f"relu{i}", hidden
    w = (rng.standard_normal((classes, channels, 1, 1)) / np.sqrt(channels)).astype(np.float32)
    node, init = _conv("head", x, w, pad=0)
    nodes.append(node)
    inits += init
    out = "head"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["head"], ["probabilities"], axis=1))
        out = "probabilities"
    nodes.append(helper.make_node("Identity", [out], ["scores"]))
    h = size or "height"
    w_ = size or "width"
    graph = helper.make_graph(
        nodes,
        "segment",
        [helper.make_tensor_value_info("pixels", elem, [batch_dim, bands or "bands", h, w_])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch_dim, classes, h, w_])],
        inits,
    )
    return _save(graph, path)


def identity_pixels_graph(path: Path | str, bands: int, size: int | None = None) -> Path:
    """A 1x1 convolution with identity weights: ``(N, bands, H, W)`` -> the same values.

    Declared ``scores: probabilities``, the kind returns exactly what the graph was fed, which
    shows the normalisation the kind applies.
    """
    w = np.eye(bands, dtype=np.float32).reshape(bands, bands, 1, 1)
    node, init = _conv("scores", "pixels", w, pad=0)
    dims: list[str | int] = ["N", bands, size or "height", size or "width"]
    graph = helper.make_graph(
        [node],
        "identity_pixels",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, dims)],
        init,
    )
    return _save(graph, path)


def pooled_output_graph(path: Path | str, bands: int, classes: int) -> Path:
    """A segmenter whose output is pooled to ``(N, K)``: one score per tile, not per pixel."""
    w = np.ones((classes, bands, 1, 1), dtype=np.float32)
    node, init = _conv("head", "pixels", w, pad=0)
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [0, -1])
    graph = helper.make_graph(
        [
            node,
            helper.make_node("GlobalAveragePool", ["head"], ["pooled"]),
            helper.make_node("Reshape", ["pooled", "shape"], ["scores"]),
        ],
        "pooled_output",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", bands, "h", "w"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", classes])],
        [*init, shape],
    )
    return _save(graph, path)
