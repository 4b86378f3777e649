"""ONNX segmentation graphs (``train.onnx.output: pixels``): checks, normalisation, scores.

A per-pixel graph has one float32 (or float64) input ``(N, C, H, W)``; its first output holds
``(N, K, H, W)`` class scores, K the ``train.pixels.classes`` (names, codes, colours: the model's).
N may be fixed (:attr:`PixelGraph.batch`: the runner feeds exactly that many windows per call);
fixed H and W (equal) are the model's window, else ``train.onnx.size`` is, else any size goes.

Bands (``train.onnx.bands``): a list of band names, STAC common names or 1-based numbers, kept as
declared and found in each scene by :func:`satpipe.models.kinds.pixels.resolve_bands`; a count N
means the scene's first N bands; null means the graph's C first bands (C must then be fixed).

Normalisation, per selected band ``b``, in float64 then rounded once to the graph's input type:
``r = x * scale[b] + offset[b]`` (digital numbers to reflectance), then ``(r - mean[b]) / std[b]``;
a pixel that is NaN or infinite in any band (invalid) is 0 in every band after normalisation.
Missing lists mean scale 1, offset 0, mean 0, std 1.

Scores: ``scores: logits`` are turned into probabilities by a softmax over K computed in float64
(the maximum subtracted first, so it cannot overflow) and rounded to float32;
``scores: probabilities`` are used as they are (as float32). NaN scores are an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from satpipe.core.errors import ModelError
from satpipe.core.files import sha256_bytes
from satpipe.models.kinds.base import TrainingSet
from satpipe.models.kinds.onnx_graph import (
    AT,
    INPUT_TYPES,
    Dim,
    Graph,
    Spec,
    check_pin,
    is_int,
    load_graph,
    one_line,
    parse_spec,
    read_model,
    show_shape,
)
from satpipe.models.kinds.pixels import PixelClasses, majority, resolve_bands, valid_pixels

if TYPE_CHECKING:
    import onnxruntime

SCORES = ("logits", "probabilities")
NORMALISATION = ("scale", "offset", "mean", "std")
SMOKE_WINDOW = 64  # the smoke test's window side when neither graph nor params fix one
Fed = tuple[tuple[int, ...], list[Any]]  # windows' shape; per session run, (windows, array...)


@dataclass(frozen=True)
class PixelSpec:
    """What the params (or a document) say a per-pixel graph is, beyond :class:`Spec`."""

    classes: PixelClasses
    bands: int | tuple[str | int, ...] | None
    scores: Literal["logits", "probabilities"]
    scale: tuple[float, ...] | None
    offset: tuple[float, ...] | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    def to_dict(self) -> dict[str, Any]:
        """The spec's part of the kind's document."""
        doc = {"pixel_classes": self.classes.to_list(), "bands": _plain(self)}
        lists = {key: getattr(self, key) for key in NORMALISATION}
        doc |= {key: None if v is None else list(v) for key, v in lists.items()}
        return doc | {"scores": self.scores}


@dataclass(frozen=True)
class PixelGraph:
    """What a per-pixel file declares, once checked against the specs."""

    opset: int
    input_name: str
    input_type: str
    output_name: str
    bands: int  # C, the number of bands the graph reads (= the bands selected)
    window: int | None  # its fixed H (= W), else train.onnx.size, else None
    batch: int | None  # its fixed N, or None when dynamic

    def to_dict(self) -> dict[str, Any]:
        """The graph's part of the kind's document."""
        names = {"opset": self.opset, "input_name": self.input_name}
        shape = {"graph_bands": self.bands, "size": self.window, "graph_batch": self.batch}
        return names | {"output_name": self.output_name} | shape


def parse_pixel_spec(params: dict[str, Any], classes: Any, who: str) -> PixelSpec:
    """Validate ``params``' per-pixel settings and ``classes`` (a ModelError naming ``who``)."""
    pixel_classes = PixelClasses.from_list(classes, f"{who}: train.pixels.classes")
    scores = params.get("scores") or "probabilities"
    if scores not in SCORES:
        raise ModelError(f"{who}: {AT}.scores is {scores!r}; expected 'logits' or 'probabilities'")
    raw: Any = params.get("bands")
    listed = _items(raw, lambda b: (is_int(b) and b >= 1) or (isinstance(b, str) and b != ""))
    if not (raw is None or (is_int(raw) and raw >= 1) or (listed and len(set(raw)) == len(raw))):
        raise ModelError(
            f"{who}: {AT}.bands is {raw!r}; expected a band count >= 1, a list of distinct band "
            "names, common names or 1-based numbers, or null"
        )
    bands = tuple(raw) if isinstance(raw, list | tuple) else raw
    lists: dict[str, tuple[float, ...] | None] = {}
    for key in NORMALISATION:
        value: Any = params.get(key)
        lo = 0.0 if key == "std" else -math.inf  # standard deviations must be positive
        numbers = _items(value, lambda v: isinstance(v, int | float) and not isinstance(v, bool))
        numbers = numbers and all(lo < v < math.inf for v in value)
        if value is not None and not numbers:
            want = "positive numbers" if key == "std" else "finite numbers"
            raise ModelError(f"{who}: {AT}.{key} is {value!r}; expected a list of {want}, or null")
        lists[key] = None if value is None else tuple(float(v) for v in value)
    kind: Literal["logits", "probabilities"] = "logits" if scores == "logits" else "probabilities"
    return PixelSpec(pixel_classes, bands, kind, **lists)


def _items(value: Any, ok: Callable[[Any], bool]) -> bool:
    """``value`` is a non-empty list (or tuple) of items that are each ``ok``."""
    return isinstance(value, list | tuple) and len(value) > 0 and all(map(ok, value))


def inspect_pixel_graph(
    file: Path, sha256: str, data: bytes, spec: Spec, pixel: PixelSpec
) -> PixelGraph:
    """Check a per-pixel graph's input and first output (a ModelError naming ``file``)."""
    opset, session, arg = load_graph(file, sha256, data, spec, "pixels (N, C, H, W)")
    outputs = session.get_outputs()
    shape: list[Dim] | None = arg.shape
    where = f"{file}: input {arg.name!r} has shape {show_shape(shape)}"
    if shape is None or len(shape) != 4:
        raise ModelError(f"{where}; expected rank 4 (N, C, H, W)")
    n, c, h, w = shape
    b = pixel.bands  # how many bands it selects (None: as many as the graph reads)
    selected = b if b is None or isinstance(b, int) else len(b)
    if not isinstance(c, int):
        if selected is None:
            raise ModelError(
                f"{where}, a dynamic band count; expected {AT}.bands to say which bands it reads"
            )
        c = selected
    elif selected is not None and selected != c:
        raise ModelError(
            f"{where}, {c} bands; expected {selected}, one per band of {AT}.bands {_plain(pixel)}"
        )
    for key in NORMALISATION:
        value = getattr(pixel, key)
        if value is not None and len(value) != c:
            n_ = f"{len(value)} values {list(value)}"
            raise ModelError(f"{file}: {AT}.{key} has {n_}; expected {c}, one per band read")
    if isinstance(h, int) and isinstance(w, int) and h != w:
        raise ModelError(f"{where}; expected square windows (N, C, size, size)")
    fixed = h if isinstance(h, int) else w if isinstance(w, int) else None
    if fixed is not None and spec.size is not None and fixed != spec.size:
        raise ModelError(f"{where}, window {fixed}; expected {AT}.size {spec.size}")
    window = fixed if fixed is not None else spec.size
    k = len(pixel.classes.names)
    expected = f"expected (N, {k}, H, W), one score per class of {list(pixel.classes.names)}"
    if not outputs:
        raise ModelError(f"{file}: declares no output; {expected}")
    out, out_shape = outputs[0], outputs[0].shape
    if out.type not in INPUT_TYPES:
        raise ModelError(f"{file}: output {out.name!r} is {out.type}; {expected} as floats")
    if out_shape is not None and (
        len(out_shape) != 4
        or (isinstance(out_shape[1], int) and out_shape[1] != k)
        or any(
            isinstance(o, int) and isinstance(i, int) and o != i
            for o, i in zip((out_shape[2], out_shape[3]), (h, w), strict=True)
        )
    ):
        raise ModelError(
            f"{file}: output {out.name!r} has shape {show_shape(out_shape)}; {expected}"
        )
    batch = n if isinstance(n, int) else None
    return PixelGraph(opset, arg.name, arg.type, out.name, c, window, batch)


def _plain(pixel: PixelSpec) -> Any:
    return list(pixel.bands) if isinstance(pixel.bands, tuple) else pixel.bands


def normalise(x: np.ndarray, pixel: PixelSpec, dtype: Any) -> np.ndarray:
    """The graph's input for pixels ``x`` ``(N, C, H, W)`` (see the module docstring).

    One float64 copy worked in place in the documented order (same bits; no ``* 1``, ``/ 1``,
    ``- 0``), invalid pixels sought only where the exact float64 sum of ``x`` is not finite.
    """
    r = np.array(x, dtype=np.float64)
    scale, offset, mean, std = (
        None if v is None else np.asarray(v, dtype=np.float64).reshape(1, -1, 1, 1)
        for v in (getattr(pixel, key) for key in NORMALISATION)
    )
    with np.errstate(invalid="ignore", over="ignore"):
        if scale is not None:
            r *= scale
        r += 0.0 if offset is None else offset  # + 0.0 turns -0.0 into 0.0, as it always did
        if mean is not None:
            r -= mean
        if std is not None:
            r /= std
    if not np.isfinite(np.sum(x, dtype=np.float64)):
        np.copyto(r, 0.0, where=~np.isfinite(x).all(axis=1, keepdims=True))
    return r.astype(dtype, copy=False)


def probabilities(
    out: Any, pixel: PixelSpec, expected: tuple[int, ...], file: Path, name: str
) -> np.ndarray:
    """``(N, K, H, W)`` float32 probabilities of a graph's output (a ModelError naming ``file``)."""
    out = np.asarray(out)
    if out.shape != expected:
        raise ModelError(f"{file}: output {name!r} has shape {out.shape}; expected {expected}")
    if not np.isfinite(np.sum(out, dtype=np.float64)) and not np.isfinite(out).all():
        raise ModelError(f"{file}: output {name!r} holds NaN or infinite scores; expected numbers")
    if pixel.scores == "probabilities":
        return np.ascontiguousarray(out, dtype=np.float32)
    z = out.astype(np.float64)  # softmax over K, in place: 8x4x256x256 in 7 ms, not 11
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(np.float32)


@dataclass(frozen=True)
class PixelModel:
    """A checked per-pixel graph: its spec, its declared interface, the bands it reads."""

    spec: PixelSpec
    graph: PixelGraph
    indices: tuple[int, ...] | None  # the scene bands predict picks (None: names, no scene)

    def band_indices(self, names: Any, count: int, source: str) -> tuple[int, ...]:
        """The 0-based bands of a scene the graph reads; a ModelError naming both band lists."""
        bands = self.spec.bands
        wanted = list(bands) if isinstance(bands, tuple) else list(range(1, self.graph.bands + 1))
        return resolve_bands(wanted, list(names), count, source)

    def tile_graph(self) -> Graph:
        """The interface in the tile kind's terms (input name and type, bands, window)."""
        g = self.graph
        return Graph(g.opset, g.input_name, g.input_type, g.output_name, g.bands, g.window)

    def to_dict(self, spec: Spec) -> dict[str, Any]:
        """The document's per-pixel part (everything but path, sha256 and input)."""
        names = list(self.spec.classes.names)
        head: dict[str, Any] = {"output": "pixels", "features": [], "classes": names}
        head |= {"batch": spec.batch, "provider": spec.provider}
        indices = None if self.indices is None else list(self.indices)
        return head | self.spec.to_dict() | self.graph.to_dict() | {"band_indices": indices}

    def run(self, session: onnxruntime.InferenceSession, file: Path, x: Any) -> np.ndarray:
        """Probabilities ``(N, K, H, W)`` float32 of windows ``x`` ``(N, C, H, W)``, in stages."""
        return self.finish(file, self.infer(session, file, self.prepare(file, x)))

    def prepare(self, file: Path, x: Any) -> Fed:
        """``x``'s shape and, per session run, its windows and the graph's (normalised) input."""
        x, g = np.asarray(x, dtype=np.float32), self.graph
        if x.ndim != 4 or x.shape[1] != g.bands:
            raise ModelError(f"{file}: pixels of shape {x.shape}; expected (N, {g.bands}, H, W)")
        step, feeds = g.batch or max(len(x), 1), []
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            feed = normalise(chunk, self.spec, INPUT_TYPES[g.input_type])
            if g.batch and len(chunk) < g.batch:  # a fixed-batch graph: pad the last run
                pad = np.zeros((g.batch - len(chunk), *feed.shape[1:]), dtype=feed.dtype)
                feed = np.concatenate([feed, pad])
            feeds.append((len(chunk), feed))
        return x.shape, feeds

    def infer(self, session: onnxruntime.InferenceSession, file: Path, fed: Fed) -> Fed:
        """:meth:`prepare`'s inputs each replaced by ``session.run``'s first output for it."""
        g, outs, k = self.graph, [], len(self.spec.classes.names)
        for n, feed in fed[1]:
            try:
                (out,) = session.run([g.output_name], {g.input_name: feed})
            except Exception as exc:  # onnxruntime's own error types
                raise ModelError(
                    f"{file}: onnxruntime failed on input {feed.shape} ({one_line(exc)}); "
                    f"expected (N, {g.bands}, H, W) with H = W = the window {g.window}"
                ) from exc
            outs.append((n, out, (len(feed), k, *feed.shape[2:])))  # and the shape expected
        return fed[0], outs

    def finish(self, file: Path, ran: Fed) -> np.ndarray:
        """Probabilities ``(N, K, H, W)`` float32 of :meth:`infer`'s outputs (padding dropped)."""
        (shape, outs), k, name = ran, len(self.spec.classes.names), self.graph.output_name
        parts = [probabilities(out, self.spec, want, file, name)[:n] for n, out, want in outs]
        return np.concatenate(parts) if parts else np.zeros((0, k, *shape[2:]), np.float32)

    def predict(
        self, session: onnxruntime.InferenceSession, file: Path, x: np.ndarray, step: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tiles ``(N, every scene band, H, W)``: each one's majority class and its share."""
        if x.ndim != 4 or self.indices is None or max(self.indices) >= x.shape[1]:
            raise ModelError(
                f"{file}: pixels of shape {x.shape} given, bands {self.indices} read; expected "
                f"(N, every band, H, W) of a scene with the bands {_plain(self.spec)}"
            )
        chosen = x[:, list(self.indices)]
        runs = range(0, max(len(x), 1), step)  # an empty batch: one empty run
        probs = np.concatenate([self.run(session, file, chosen[i : i + step]) for i in runs])
        return majority(probs, valid_pixels(x))

    def smoke_test(self, session: onnxruntime.InferenceSession, file: Path) -> None:
        """Run the graph once on a blank window; declared probabilities must sum to 1."""
        side = self.graph.window or SMOKE_WINDOW
        shape = (self.graph.batch or 1, self.graph.bands, side, side)
        total = self.run(session, file, np.zeros(shape, np.float32)).astype(np.float64).sum(axis=1)
        if self.spec.scores == "probabilities" and not np.allclose(total, 1.0, atol=1e-3):
            raise ModelError(
                f"{file}: {AT}.scores is 'probabilities' but a blank window's scores sum to "
                f"{float(total.min()):.6g}..{float(total.max()):.6g} over the classes; expected 1 "
                "(declare scores: logits for raw scores)"
            )


def fitted(train: TrainingSet, params: dict[str, Any], file: Path) -> tuple[Spec, str, PixelModel]:
    """The spec, sha256 and checked model of ``file`` (``params``: train.onnx, with ``pixels``).

    The bands are found among the training scene's where ``train.pixels`` names them; else
    numbers and counts give them, and names leave them unknown. ModelErrors name ``file``.
    """
    pixels = params.get("pixels")
    if not isinstance(pixels, dict) or not pixels.get("classes"):
        raise ModelError(
            f"{file}: train.pixels is {pixels!r}; expected its classes, one per output"
        )
    if params.get("classes") is not None:
        raise ModelError(
            f"{file}: {AT}.classes is {params['classes']!r} for output pixels; expected null "
            "(the classes are train.pixels.classes)"
        )
    pixel = parse_pixel_spec(params, pixels["classes"], str(file))
    spec = parse_spec(params, str(file), classes=list(pixel.classes.names))
    if tuple(train.classes) != pixel.classes.names:
        raise ModelError(
            f"{file}: train.pixels.classes are {list(pixel.classes.names)}; expected the "
            f"model's classes {list(train.classes)} in that order"
        )
    data = read_model(file)
    sha256 = sha256_bytes(data)
    graph = inspect_pixel_graph(file, sha256, data, spec, pixel)
    model, sample, bands = PixelModel(pixel, graph, None), train.pixels, pixel.bands
    if sample is not None and sample.bands:
        names = [n or None for n in sample.bands]
        indices = model.band_indices(names, len(names), f"{file}: the training scene")
    elif not isinstance(bands, tuple):  # a count or null: the first bands
        indices = tuple(range(graph.bands))
    elif all(map(is_int, bands)):  # numbers alone give positions; names need a scene
        indices = tuple(int(b) - 1 for b in bands)
    else:
        return spec, sha256, model
    return spec, sha256, replace(model, indices=indices)


def need(model: PixelModel | None, file: Path) -> PixelModel:
    """``model``, or a ModelError naming ``file`` when the kind labels tiles (no model)."""
    if model is None:
        raise ModelError(f"{file}: {AT}.output is 'tile'; expected 'pixels' for per-pixel scores")
    return model


def from_document(
    data: dict[str, Any], source: str, file: Path, pinned: str
) -> tuple[PixelModel, Spec]:
    """A per-pixel model from its document; ModelErrors name ``source`` or the changed file."""
    missing = [key for key in DOC_KEYS if key not in data]
    if missing:
        raise ModelError(f"{source}: onnx pixel document lacks {missing}; expected {DOC_KEYS}")
    pixel = parse_pixel_spec(data, data["pixel_classes"], source)
    spec = parse_spec(data, source, classes=list(pixel.classes.names))
    indices = data["band_indices"]
    if indices is not None and not _items(indices, lambda i: is_int(i) and i >= 0):
        raise ModelError(f"{source}: onnx band_indices is {indices!r}; expected 0-based ints")
    content = read_model(file)
    check_pin(file, sha256_bytes(content), pinned)
    graph = inspect_pixel_graph(file, pinned, content, spec, pixel)
    for key, value in graph.to_dict().items():
        if data[key] != value:
            raise ModelError(
                f"{source}: onnx {key} is {data[key]!r}; the file {file} declares {value!r}"
            )
    return PixelModel(pixel, graph, None if indices is None else tuple(indices)), spec


DOC_KEYS = [
    *("path", "sha256", "input", "output", "features", "classes", "batch", "provider"),
    *("pixel_classes", "bands", "scores", *NORMALISATION),
    *("opset", "input_name", "output_name", "graph_bands", "size", "graph_batch", "band_indices"),
]
