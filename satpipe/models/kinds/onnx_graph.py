"""An ONNX file checked against what ``train.onnx`` declares, and its onnxruntime sessions.

:func:`parse_spec` reads ``train.onnx`` (or a stored document) into a :class:`Spec`;
:func:`inspect_graph` loads the file and checks its one input and its first output against the
spec (type, rank, the dynamic batch dimension, feature count or bands and size, class count),
returning the :class:`Graph` it declares, or a one-line :class:`~satpipe.core.errors.ModelError`
naming the file, what it declares and what was expected.

Sessions: one :class:`onnxruntime.InferenceSession` per process, file content and execution
provider, kept in a module-level cache keyed by the process id (so a forked worker builds its own)
and the file's sha256 (suffixed ``/cuda`` for the CUDA provider), created on first use from the
very bytes that were hashed. The session options are pinned (:data:`SESSION_SETTINGS`), because
ONNX Runtime's bits depend on them: graph optimisation level ``ORT_ENABLE_ALL`` (the level every
earlier model ran at, and on CPU the fastest: its NCHWc convolution layout ran a 4-layer 3x3 conv
stack on 8 windows of 256x256 in 0.17-0.24 s against 0.39-0.50 s at ``ORT_ENABLE_BASIC``, one
thread), one intra-op and one inter-op thread, sequential execution and deterministic compute,
so that results do not depend on threading; parallelism comes from worker processes instead. On
CUDA, cuDNN's convolution algorithm is the heuristic default (no timing-based search, which can
pick a different algorithm run to run). Results are reproducible per provider and machine type:
CPU kernels are chosen by the CPU's instruction set. ``InferenceSession.run`` is thread-safe, so
one kind may predict from several threads. A kind holds no session itself: pickled to another
process it re-reads the file on first use and refuses it if its sha256 has changed.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from satpipe.core.errors import ModelError
from satpipe.core.files import sha256_bytes

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

INPUTS = ("features", "pixels")
DEFAULT_BATCH = 256
MIN_PIXEL_BATCH = 64
PARAM_KEYS = (
    *("path", "input", "output", "features", "classes", "batch", "bands", "size", "scores"),
    *("scale", "offset", "mean", "std", "provider", "pixels"),
)
OUTPUTS = ("tile", "pixels")
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
"""``train.onnx.provider`` -> the ONNX Runtime execution provider it names."""
OPTIMIZATION_LEVEL = "ORT_ENABLE_ALL"
THREADS = 1
SESSION_SETTINGS = {
    "graph_optimization_level": OPTIMIZATION_LEVEL,
    "intra_op_num_threads": str(THREADS),
    "inter_op_num_threads": str(THREADS),
    "execution_mode": "ORT_SEQUENTIAL",
    "use_deterministic_compute": "true",
}
"""The pinned session options (see the module docstring), as recorded in provenance."""
AT = "train.onnx"
"""Where the kind's params live in params.yaml (named in messages about them)."""

# ONNX element types accepted for the input and the first output, and the numpy type to feed.
INPUT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")

_SESSIONS: dict[tuple[int, str], onnxruntime.InferenceSession] = {}
_SESSIONS_LOCK = threading.Lock()

Dim = int | str | None
"""One dimension of a declared shape as onnxruntime reports it: static, named or unknown."""


@dataclass(frozen=True)
class Spec:
    """What the params (or a document) say the graph is."""

    input: Literal["features", "pixels"]
    features: tuple[str, ...]
    classes: tuple[str, ...]
    batch: int
    bands: int | None
    size: int | None
    output: Literal["tile", "pixels"] = "tile"
    provider: str = "cpu"


@dataclass(frozen=True)
class Graph:
    """What the file declares, once checked against a :class:`Spec`."""

    opset: int
    input_name: str
    input_type: str
    output_name: str
    bands: int | None
    size: int | None


def parse_spec(params: dict[str, Any], who: str, *, classes: Any) -> Spec:
    """Validate the settings shared by params and documents; ``who`` is named in messages."""
    kind = params.get("input")
    if kind not in INPUTS:
        raise ModelError(f"{who}: {AT}.input is {kind!r}; expected 'features' or 'pixels'")
    output = output_of(params, who)
    if output == "pixels" and kind != "pixels":
        raise ModelError(f"{who}: {AT}.output is 'pixels' for {kind} input; expected input pixels")
    provider = params.get("provider") or "cpu"
    if provider not in PROVIDERS:
        raise ModelError(f"{who}: {AT}.provider is {provider!r}; expected 'cpu' or 'cuda'")
    if output == "tile":
        extra = [key for key in ("scale", "offset", "mean", "std") if params.get(key) is not None]
        if extra:
            raise ModelError(
                f"{who}: {AT}.{extra[0]} is {params[extra[0]]!r} for tile output; expected null "
                "(normalisation is for output pixels)"
            )
    features = params.get("features") or []
    if kind == "features":
        if not _names(features):
            raise ModelError(
                f"{who}: {AT}.features is {features!r}; expected the graph's feature columns "
                "in order, e.g. ['mean_intensity'] (distinct names)"
            )
    elif features:
        raise ModelError(f"{who}: {AT}.features is {features!r} for pixel input; expected none")
    if not _names(classes) or len(classes) < 2:
        raise ModelError(
            f"{who}: {AT}.classes is {classes!r}; expected at least two distinct class names, "
            "one per output column"
        )
    batch = params.get("batch", DEFAULT_BATCH)
    least = MIN_PIXEL_BATCH if kind == "pixels" and output == "tile" else 1
    if not is_int(batch) or batch < least:
        raise ModelError(
            f"{who}: {AT}.batch is {batch!r}; expected an integer >= {least} for {kind} input"
        )
    shape = {key: params.get(key) for key in ("bands", "size")}
    for key, value in shape.items():
        if value is None or (key == "bands" and output == "pixels" and isinstance(value, list)):
            continue  # a band list is the per-pixel module's (onnx_pixels) to check
        if kind == "features":
            raise ModelError(f"{who}: {AT}.{key} is {value!r} for feature input; expected none")
        if not is_int(value) or value < 1:
            raise ModelError(f"{who}: {AT}.{key} is {value!r}; expected a positive integer")
    bands = shape["bands"] if is_int(shape["bands"]) else None
    return Spec(
        kind, tuple(features), tuple(classes), batch, bands, shape["size"], output, provider
    )


def output_of(params: dict[str, Any], who: str = AT) -> Literal["tile", "pixels"]:
    """``params``' ``output`` (``tile`` when unset); a ModelError naming ``who`` otherwise."""
    output = params.get("output") or "tile"
    if output not in OUTPUTS:
        raise ModelError(f"{who}: {AT}.output is {output!r}; expected 'tile' or 'pixels'")
    return "pixels" if output == "pixels" else "tile"


def _names(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(v, str) and v for v in value)
        and len(set(value)) == len(value)
    )


def is_int(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def read_model(file: Path) -> bytes:
    """The bytes of the model file, or a one-line :class:`ModelError` naming it."""
    try:
        return file.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{file}: no such file; expected the ONNX model {AT}.path names") from None
    except OSError as exc:
        raise ModelError(
            f"{file}: cannot be read ({one_line(exc)}); expected an ONNX file"
        ) from exc


def check_pin(file: Path, actual: str, pinned: str) -> None:
    """Refuse a file whose sha256 ``actual`` is not the ``pinned`` one."""
    if actual != pinned:
        raise ModelError(f"{file}: sha256 is {actual}; the model pins {pinned}")


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, at most ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cache_key(sha256: str, provider: str) -> tuple[int, str]:
    return (os.getpid(), sha256 if provider == "cpu" else f"{sha256}/{provider}")


def check_provider(file: Path | str, provider: str) -> str:
    """The ONNX Runtime name of ``provider``, refusing one this installation lacks."""
    import onnxruntime

    name = PROVIDERS[provider]
    available = onnxruntime.get_available_providers()
    if name not in available:
        raise ModelError(
            f"{file}: {AT}.provider is {provider!r} but onnxruntime {onnxruntime.__version__} "
            f"offers only {available}; expected the GPU build (pip install onnxruntime-gpu) "
            "for 'cuda', or provider 'cpu'"
        )
    return name


def provenance(provider: str) -> dict[str, str]:
    """What the outputs' tags record about a session: ONNX Runtime, provider, its settings."""
    import onnxruntime

    return {
        "onnxruntime": onnxruntime.__version__,
        "provider": PROVIDERS[provider],
        **SESSION_SETTINGS,
    }


def open_session(
    file: Path, sha256: str, data: bytes, provider: str = "cpu"
) -> onnxruntime.InferenceSession:
    """This process's session for content ``sha256`` (``data``) on ``provider``, created once.

    Raises:
        ModelError: the provider is not installed, or the bytes do not load, naming ``file``.
    """
    key = _cache_key(sha256, provider)
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is not None:
            return session
        import onnxruntime

        name = check_provider(file, provider)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = getattr(
            onnxruntime.GraphOptimizationLevel, OPTIMIZATION_LEVEL
        )
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = THREADS
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.use_deterministic_compute = True
        options.log_severity_level = 3  # errors only: no warnings on stderr
        chosen: list[Any] = [name]
        if provider == "cuda":
            chosen = [(name, {"cudnn_conv_algo_search": "DEFAULT"}), "CPUExecutionProvider"]
        try:
            session = onnxruntime.InferenceSession(data, sess_options=options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / ... types
            raise ModelError(
                f"{file}: does not load as ONNX in onnxruntime {onnxruntime.__version__} "
                f"({one_line(exc)}); expected a valid ONNX model"
            ) from exc
        _SESSIONS[key] = session
        log.debug("%s: onnxruntime session created for sha256 %s", file, sha256)
        return session


def declared_opset(file: Path, data: bytes) -> int:
    """The default-domain opset of the model in ``data``, refusing non-ONNX and external data."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and anything else the parser raises
        raise ModelError(
            f"{file}: does not load as ONNX ({one_line(exc)}); expected an ONNX model file"
        ) from exc
    if not model.HasField("graph"):
        raise ModelError(f"{file}: does not load as ONNX (no graph); expected an ONNX model file")
    if any(uses_external_data(t) for t in model.graph.initializer):
        raise ModelError(
            f"{file}: keeps tensors in external data files; expected a self-contained .onnx "
            "file (its sha256 must pin the whole model)"
        )
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise ModelError(f"{file}: imports no ai.onnx opset; expected an ONNX opset import")
    return int(versions[0])


def load_graph(
    file: Path, sha256: str, data: bytes, spec: Spec, what: str
) -> tuple[int, onnxruntime.InferenceSession, Any]:
    """The opset, the session and the one float input of a graph (``what`` it should take)."""
    opset = declared_opset(file, data)
    session = open_session(file, sha256, data, spec.provider)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise ModelError(
            f"{file}: declares {len(inputs)} inputs {names}; expected exactly one ({what})"
        )
    arg = inputs[0]
    if arg.type not in INPUT_TYPES:
        raise ModelError(
            f"{file}: input {arg.name!r} is {arg.type}; expected tensor(float) (float32) or "
            "tensor(double) (float64)"
        )
    return opset, session, arg


def inspect_graph(file: Path, sha256: str, data: bytes, spec: Spec) -> Graph:
    """Check the graph's declared input and first output against ``spec``."""
    opset, session, arg = load_graph(file, sha256, data, spec, spec.input)
    outputs = session.get_outputs()
    shape: list[Dim] | None = arg.shape
    where = f"{file}: input {arg.name!r} has shape {show_shape(shape)}"
    bands, size = None, None
    if spec.input == "features":
        width = len(spec.features)
        if shape is None or len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != width):
            raise ModelError(f"{where}; expected (N, {width}), one column per {AT}.features entry")
    else:
        if shape is None or len(shape) != 4:
            raise ModelError(f"{where}; expected rank 4 (N, bands, size, size) for pixel input")
        bands = _dim(where, "bands", shape[1], spec.bands)
        height, width_ = shape[2], shape[3]
        if isinstance(height, int) and isinstance(width_, int) and height != width_:
            raise ModelError(f"{where}; expected square tiles (N, bands, size, size)")
        static = height if isinstance(height, int) else width_
        size = _dim(where, "size", static, spec.size)
    if isinstance(shape[0], int):
        raise ModelError(
            f"{where}; expected a dynamic batch dimension (N), the graph is fed {spec.batch} "
            "tiles at a time"
        )
    if not outputs:
        raise ModelError(f"{file}: declares no output; expected (N, {len(spec.classes)}) scores")
    out = outputs[0]
    k = len(spec.classes)
    out_shape: list[Dim] | None = out.shape
    if out.type not in INPUT_TYPES:
        raise ModelError(
            f"{file}: output {out.name!r} is {out.type}; expected tensor(float) or tensor(double) "
            f"scores, one per class ({k})"
        )
    if out_shape is not None and (
        len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != k)
    ):
        raise ModelError(
            f"{file}: output {out.name!r} has shape {show_shape(out_shape)}; expected (N, {k}), "
            f"one score per class of {list(spec.classes)}"
        )
    return Graph(opset, arg.name, arg.type, out.name, bands, size)


def _dim(where: str, key: str, declared: Dim, wanted: int | None) -> int | None:
    """Reconcile a static graph dimension with the params' ``bands`` or ``size``."""
    if not isinstance(declared, int):
        return wanted
    if wanted is not None and wanted != declared:
        raise ModelError(f"{where}, {key} {declared}; expected {AT}.{key} {wanted}")
    return declared


def show_shape(shape: list[Dim] | None) -> str:
    """A declared shape as messages show it: ``(N, 3, ?, ?)``."""
    if shape is None:
        return "unknown"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def session_for(file: Path, sha256: str, provider: str = "cpu") -> onnxruntime.InferenceSession:
    """This process's session for ``file`` on ``provider``; its content must still have ``sha256``.

    Raises:
        ModelError: the file is missing, its sha256 differs from ``sha256``, or it does not load.
    """
    session = _SESSIONS.get(_cache_key(sha256, provider))
    if session is None:
        data = read_model(file)
        check_pin(file, sha256_bytes(data), sha256)
        session = open_session(file, sha256, data, provider)
    return session
