"""The ``onnx`` kind: a classifier a team trained elsewhere and exported to ONNX.

An *ONNX model* here is one self-contained ``.onnx`` file whose graph has exactly one input and
whose first output holds one score per class: ``(N, len(classes))``, column ``i`` meaning
``classes[i]``. The input is either the tile's feature vector (``input: features``, shape
``(N, len(features))``, columns in the order of ``features``) or its pixels (``input: pixels``,
shape ``(N, bands, size, size)``). The batch dimension must be dynamic (a name or unknown), since
tiles are fed ``batch`` at a time.

Nothing is trained: :meth:`OnnxKind.fit` loads the file, checks that its declared input and
output are what ``params`` say (a one-line :class:`~satpipe.core.errors.ModelError` naming the file
otherwise), runs it once on the training features as a smoke test (logging the accuracy on the
labelled tiles) and pins the file by its sha256. The document stores the path relative to the
project root, never an absolute one, and :meth:`OnnxKind.from_dict` refuses a file whose sha256
differs from the pinned one, as a tampered model is refused.

A tile's class is the column with the highest score (``argmax``; on a tie the *first* such
column, as :func:`numpy.argmax` does) and its score is that highest value, as float64. A score of
NaN is an error, not a class.

Numeric precision: the graph sees what its input type declares. For a ``tensor(float)`` (float32)
input, the float64 features are rounded to the nearest float32 before the graph sees them, so a
tile whose feature lies within half a float32 ulp of a decision boundary (about ``2**-24`` of
the value: 0.002 at 32768) can be classified differently from the same rule computed in float64;
for example a threshold graph ``x > t`` with ``t`` exactly representable in float32 sends
``x = nextafter(t, inf)`` to the lower class, since ``float32(x) == t``. Boundaries that are not
representable in float32 move by up to half an ulp as well. A graph with a ``tensor(double)``
(float64) input receives the features unrounded and can match a float64 rule bit for bit; both
input types are accepted, for features and for pixels (float32 pixels are widened exactly), and
the output may be float32 or float64.

The file is read, checked and run through :mod:`satpipe.models.kinds.onnx_graph`, which holds the
params' spec, the graph's declared interface, the pinned session options and the per-process
session cache (one session per file content and ``provider``: ``cpu``, or ``cuda`` where the GPU
build of ONNX Runtime is installed).

``output: pixels`` makes it a :class:`~satpipe.models.kinds.base.PixelKind`, a segmentation graph
(classes: ``params["pixels"]``, i.e. ``train.pixels``), checked and run by ``onnx_pixels``.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from satpipe.core.errors import ModelError
from satpipe.core.files import sha256_bytes
from satpipe.models.kinds import onnx_pixels as px
from satpipe.models.kinds.base import Output, PixelStages, TrainingSet
from satpipe.models.kinds.onnx_graph import (
    AT,
    INPUT_TYPES,
    PARAM_KEYS,
    SHA256_PATTERN,
    Dim,
    Graph,
    Spec,
    check_pin,
    inspect_graph,
    output_of,
    parse_spec,
    provenance,
    read_model,
    session_for,
)

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

MEAN_INTENSITY = "mean_intensity"
"""The feature drift watches for pixel input (the tile's mean intensity)."""


class OnnxKind:
    """A pre-trained ONNX classifier (see the module docstring).

    ``input`` is a per-instance property here (``"features"`` or ``"pixels"``, from ``params``),
    not a class attribute as in :class:`~satpipe.models.kinds.base.Kind`: one kind serves both.
    """

    name: ClassVar[str] = "onnx"
    schema: ClassVar[int] = 1
    pointwise: ClassVar[bool] = False  # a graph's scores may depend on a pixel's neighbours
    _px: px.PixelModel | None = None  # output pixels: the checked per-pixel graph

    def __init__(self, *, path: str, file: Path, sha256: str, spec: Spec, graph: Graph) -> None:
        self._path = path
        self._file = file
        self._sha256 = sha256
        self._spec = spec
        self._graph = graph

    @property
    def output(self) -> Output:
        """What the kind labels: ``"tile"`` or ``"pixels"`` (per instance, from ``params``)."""
        return self._spec.output

    @classmethod
    def output_for(cls, params: dict[str, Any]) -> Output:
        """``params``' ``output`` (``tile`` when unset); a ModelError if it is something else."""
        return output_of(params)

    @property
    def input(self) -> Literal["features", "pixels"]:
        """What :meth:`predict` takes: ``"features"`` or ``"pixels"`` (per instance)."""
        return self._spec.input

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The declared features, in the graph's column order (empty for pixel input)."""
        return self._spec.features

    @property
    def monitored(self) -> str:
        """``mean_intensity`` for pixel input; the first declared feature for feature input."""
        return self._spec.features[0] if self._spec.input == "features" else MEAN_INTENSITY

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names of the graph's output columns, in order."""
        return self._spec.classes

    @property
    def file(self) -> Path:
        """The model file, resolved against the root it was loaded with."""
        return self._file

    @property
    def sha256(self) -> str:
        """The pinned sha256 of the model file."""
        return self._sha256

    @property
    def session(self) -> onnxruntime.InferenceSession:
        """This process's session for the file's content (created on first use, then shared)."""
        return session_for(self._file, self._sha256, self._spec.provider)

    @property
    def batch(self) -> int | None:
        """A per-pixel graph's fixed batch N (feed exactly that many windows), else None."""
        return self._px.graph.batch if self._px else None

    @property
    def window(self) -> int | None:
        """A per-pixel graph's window: its fixed H (= W), else ``size``, else None (any)."""
        return self._px.graph.window if self._px else None

    @property
    def colours(self) -> tuple[str, ...]:
        """Per-pixel output: each class's colour (``#rrggbb``); empty for tile output."""
        return self._px.spec.classes.colours if self._px else ()

    @property
    def label_codes(self) -> tuple[tuple[int, ...], ...]:
        """Per-pixel output: each class's reference label codes; empty for tile output."""
        return self._px.spec.classes.codes if self._px else ()

    def band_indices(self, names: Any, count: int, source: str) -> tuple[int, ...]:
        """The 0-based bands of a scene the graph reads; a ModelError if the scene lacks one."""
        return px.need(self._px, self._file).band_indices(names, count, source)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, K, H, W)`` float32 of windows ``(N, C, H, W)`` (see onnx_pixels)."""
        return px.need(self._px, self._file).run(self.session, self._file, x)

    def stages(self) -> PixelStages:
        """:meth:`scores` in three steps a runner may overlap: normalise, session.run, softmax."""
        m, f = px.need(self._px, self._file), self._file
        return partial(m.prepare, f), partial(m.infer, self.session, f), partial(m.finish, f)

    def provenance(self) -> dict[str, str]:
        """ONNX Runtime's version, the provider and the pinned session settings."""
        return provenance(self._spec.provider)

    @classmethod
    def fit(cls, train: TrainingSet, params: dict[str, Any], root: Path) -> OnnxKind:
        """Load and check the ONNX file ``params`` name; nothing is trained.

        Args:
            train: the training tiles: for feature input the graph is run on their features
                as a smoke test, and the accuracy on the labelled ones is logged.
            params: ``train.onnx`` from params.yaml: ``path``, ``input``, ``features``,
                ``classes``, ``batch``, ``bands``, ``size`` (see the module docstring).
            root: the directory a relative ``path`` is resolved against; the document stores
                the path relative to it.

        Raises:
            ModelError: one line naming the file (or the params key), what it declares and
                what was expected.
        """
        unknown = sorted(set(params) - set(PARAM_KEYS))
        if unknown:
            raise ModelError(f"{AT}: unknown keys {unknown}; expected some of {list(PARAM_KEYS)}")
        raw_path = params.get("path")
        if not isinstance(raw_path, str | os.PathLike) or not str(raw_path):
            raise ModelError(f"{AT}.path is {raw_path!r}; expected the path of the .onnx file")
        file = Path(os.path.abspath(Path(root) / raw_path))
        model = None
        if output_of(params, str(file)) == "pixels":  # a segmentation graph: see onnx_pixels
            spec, sha256, model = px.fitted(train, params, file)
            graph = model.tile_graph()
        else:
            classes = params.get("classes", list(train.classes))
            spec = parse_spec(params, str(file), classes=classes)
            if spec.classes != tuple(train.classes):
                raise ModelError(
                    f"{file}: {AT}.classes are {list(spec.classes)}; expected the model's classes "
                    f"{list(train.classes)} in that order"
                )
            data = read_model(file)
            sha256 = sha256_bytes(data)
            graph = inspect_graph(file, sha256, data, spec)
        relative = PurePosixPath(Path(os.path.relpath(file, os.path.abspath(root))).as_posix())
        kind = cls(path=str(relative), file=file, sha256=sha256, spec=spec, graph=graph)
        kind._px = model
        kind._smoke_test(train)
        return kind

    def _smoke_test(self, train: TrainingSet) -> None:
        """Run the graph once: on the training features, or on two blank tiles for pixels."""
        if self._px is not None:
            self._px.smoke_test(self.session, self._file)
            return
        if self.input == "pixels":
            if self._graph.bands is None or self._graph.size is None:
                log.info("%s: tile shape not declared; no smoke test run", self._file)
                return
            shape = (2, self._graph.bands, self._graph.size, self._graph.size)
            self.predict(np.zeros(shape, dtype=np.float32))
            log.info("%s: ran on blank %s tiles", self._file, shape)
            return
        missing = [name for name in self.feature_names if name not in train.names]
        if missing:
            raise ModelError(
                f"{self._file}: {AT}.features lists {missing}, which the training set lacks; "
                f"expected some of {list(train.names)}"
            )
        columns = [train.names.index(name) for name in self.feature_names]
        positions, _ = self.predict(np.asarray(train.features, dtype=np.float64)[:, columns])
        labelled = [i for i, ref in enumerate(train.references) if ref is not None]
        if not labelled:
            log.info("%s: ran on %d training tiles; none labelled", self._file, len(positions))
            return
        accuracy = float(np.mean(positions[labelled] == train.labelled()[1]))
        msg = "%s: ran on %d training tiles; accuracy on the %d labelled ones %.4f"
        log.info(msg, self._file, len(positions), len(labelled), accuracy)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classify a batch, ``batch`` tiles per session run.

        Args:
            x: ``(N, len(features))`` feature rows (float64) for feature input, or
                ``(N, bands, size, size)`` float32 pixels for pixel input. Cast to the graph's
                input type (float32 or float64; see the module docstring on precision).

        Returns:
            Per tile, the position of the highest-scoring class (int64; ties go to the first)
            and that highest score (float64).

        Raises:
            ModelError: ``x`` has the wrong shape, or the graph's output is not one score per
                class or holds NaN.
        """
        if self._px is not None:  # per-pixel output: majority of valid pixels, by tile
            step = self._px.graph.batch or self._spec.batch
            return self._px.predict(self.session, self._file, np.asarray(x, np.float32), step)
        x = np.asarray(x)
        self._check_batch_shape(x.shape)
        n = x.shape[0]
        positions = np.empty(n, dtype=np.int64)
        scores = np.empty(n, dtype=np.float64)
        if n == 0:
            return positions, scores
        session = self.session
        dtype = INPUT_TYPES[self._graph.input_type]
        name, output, k = self._graph.input_name, self._graph.output_name, len(self.classes)
        for start in range(0, n, self._spec.batch):
            chunk = np.ascontiguousarray(x[start : start + self._spec.batch], dtype=dtype)
            (out,) = session.run([output], {name: chunk})
            out = np.asarray(out)
            if out.shape != (len(chunk), k):
                raise ModelError(
                    f"{self._file}: output {output!r} has shape {out.shape} for "
                    f"{len(chunk)} tiles; expected ({len(chunk)}, {k}), one score per class"
                )
            nan = int(np.isnan(out).any(axis=1).sum())
            if nan:
                raise ModelError(
                    f"{self._file}: output {output!r} is NaN for {nan} of {len(chunk)} tiles; "
                    "expected a number per class"
                )
            best = np.argmax(out, axis=1)
            positions[start : start + len(chunk)] = best
            scores[start : start + len(chunk)] = out[np.arange(len(chunk)), best]
        return positions, scores

    def _check_batch_shape(self, shape: tuple[int, ...]) -> None:
        if self.input == "features":
            expected: tuple[Dim, ...] = ("N", len(self.feature_names))
        else:
            expected = ("N", self._graph.bands, self._graph.size, self._graph.size)
        ok = len(shape) == len(expected) and all(
            e in ("N", None) or s == e for s, e in zip(shape, expected, strict=True)
        )
        if not ok:
            want = ", ".join("?" if e is None else str(e) for e in expected)
            raise ModelError(
                f"{self._file}: {self.input} of shape {tuple(shape)} given; expected ({want})"
            )

    def to_dict(self) -> dict[str, Any]:
        """The kind's document: the relative path, the pinned sha256 and the checked facts."""
        if self._px is not None:
            head = {"path": self._path, "sha256": self._sha256, "input": "pixels"}
            return {**head, **self._px.to_dict(self._spec)}
        doc = {
            "path": self._path,
            "sha256": self._sha256,
            "input": self.input,
            "features": list(self.feature_names),
            "classes": list(self.classes),
            "batch": self._spec.batch,
            "bands": self._graph.bands,
            "size": self._graph.size,
            "opset": self._graph.opset,
            "input_name": self._graph.input_name,
            "output_name": self._graph.output_name,
        }
        if self._spec.provider != "cpu":  # documents of CPU models stay as they were
            doc["provider"] = self._spec.provider
        return doc

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str, root: Path | None) -> OnnxKind:
        """Rebuild the kind from :meth:`to_dict`'s document, re-checking the file.

        Args:
            data: the document.
            source: where the document came from (named in messages about it).
            root: the directory the document's relative path is resolved against.

        Raises:
            ModelError: the document is malformed (naming ``source``), the path is relative and
                ``root`` is None, or the file is missing, has another sha256 than the pinned
                one, or no longer passes the checks (naming the file).
        """
        if not isinstance(data, dict):
            raise ModelError(
                f"{source}: onnx kind document is {type(data).__name__}; expected a mapping"
            )
        missing = [key for key in _DOC_KEYS if key not in data]
        if missing:
            raise ModelError(f"{source}: onnx kind document lacks {missing}; expected {_DOC_KEYS}")
        path, pinned = data["path"], data["sha256"]
        if not isinstance(path, str) or not path:
            raise ModelError(f"{source}: onnx path is {path!r}; expected a file path")
        if not isinstance(pinned, str) or not SHA256_PATTERN.fullmatch(pinned):
            raise ModelError(f"{source}: onnx sha256 is {pinned!r}; expected 64 hex digits")
        if not Path(path).is_absolute() and root is None:
            raise ModelError(
                f"{source}: onnx path {path!r} is relative and no root was given; expected a "
                "root directory to resolve it against"
            )
        file = Path(os.path.abspath(Path(root or "") / path))
        if data.get("output") == "pixels":
            model, spec = px.from_document(data, source, file, pinned)
            kind = cls(path=path, file=file, sha256=pinned, spec=spec, graph=model.tile_graph())
            kind._px = model
            return kind
        spec = parse_spec(data, source, classes=data["classes"])
        content = read_model(file)
        check_pin(file, sha256_bytes(content), pinned)
        graph = inspect_graph(file, pinned, content, spec)
        for key in ("opset", "input_name", "output_name", "bands", "size"):
            if data[key] != getattr(graph, key):
                raise ModelError(
                    f"{source}: onnx {key} is {data[key]!r}; the file {file} declares "
                    f"{getattr(graph, key)!r}"
                )
        return cls(path=path, file=file, sha256=pinned, spec=spec, graph=graph)

    def details(self) -> dict[str, Any]:
        """What ``/model`` shows: path, sha256, input, features, classes (and output, provider)."""
        doc = self.to_dict()
        keys = ["path", "sha256", "input", "features", "classes"]
        keys += ["output", "provider", "size"] if self._px is not None else []
        return {key: doc[key] for key in keys}


_DOC_KEYS = [
    *("path", "sha256", "input", "features", "classes", "batch", "bands", "size", "opset"),
    *("input_name", "output_name"),
]
