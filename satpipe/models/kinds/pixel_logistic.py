"""The pixel_logistic kind: multinomial logistic regression on each pixel (semantic segmentation).

Each pixel is described by the features ``train.pixel_logistic.features`` lists, in order:

* ``bands``: the pixel's value in every band of the training scene (in its own units);
* a band name (``B03``), a common name (``green``) or a 1-based band number (``"3"``): that band;
* ``ndwi`` ``(green - nir) / (green + nir)``, ``ndvi`` ``(nir - red) / (nir + red)``, ``mndwi``
  ``(green - swir16) / (green + swir16)``: normalised differences of bands found by common name
  (:func:`satpipe.models.kinds.pixels.resolve_bands`); 0 where the two bands sum to 0.

The model is :mod:`satpipe.models.kinds.logistic`'s, fitted on a deterministic sample of labelled
pixels of the training tiles (:mod:`satpipe.models.pixel_sample`) with the same exact, BLAS-free
Newton solver (:func:`satpipe.models.kinds.logistic_solver.newton`): features standardised by the
sample's mean and population standard deviation (1.0 for a constant one), every stored number
rounded to 10 significant digits, so the document is the same bytes on every machine and for any
order of the sample. Prediction uses only elementwise float64 arithmetic from the stored numbers
and the solver's own ``exp``, so class rasters are machine-independent too. A class without
sample pixels has ``null`` intercept, probability 0 and is never predicted.

An invalid input pixel (NaN in a band the model reads) gets the training mean of every feature it
spoils (standardised value 0); its scores are meaningless and callers mask it out.

Params (``train.pixel_logistic``): ``features``, ``l2`` (ridge penalty, default 1.0),
``iterations`` (Newton steps, default 100); the classes and the sample size are ``train.pixels``'s,
passed in as ``params["pixels"]``. :func:`check_document` checks a stored document.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from satpipe.core.errors import ModelError
from satpipe.models.kinds.base import Output, TrainingSet
from satpipe.models.kinds.logistic_document import SOLVER, is_number
from satpipe.models.kinds.logistic_solver import exact_sum, newton, round10, softmax
from satpipe.models.kinds.pixel_exp import linear, scores_into
from satpipe.models.kinds.pixels import PixelClasses, majority, resolve_bands, valid_pixels

INDICES: dict[str, tuple[str, str]] = {
    "ndwi": ("green", "nir"),
    "ndvi": ("nir", "red"),
    "mndwi": ("green", "swir16"),
}
PARAM_KEYS = ("features", "l2", "iterations", "pixels")
DOCUMENT_KEYS = (
    "classes",
    "bands",
    "positions",
    "scene_bands",
    "features",
    "mean",
    "std",
    "weights",
    "intercepts",
    "l2",
    "iterations",
    "solver",
    "training",
)
Feature = tuple[str, tuple[int, ...]]  # name, positions in the model's bands (one, or a pair)


def _features(
    items: Sequence[str], names: Sequence[str], source: str
) -> tuple[list[int], list[Feature]]:
    """The scene bands (0-based, ascending) the ``items`` read, and each feature over them."""
    wanted: list[tuple[str, tuple[int, ...]]] = []  # (name, scene positions)
    scene_names: list[str | None] = [n or None for n in names]
    for item in items:
        if item == "bands":
            wanted += [(n or f"band {i + 1}", (i,)) for i, n in enumerate(names)]
        elif item in INDICES:
            pair = resolve_bands(INDICES[item], scene_names, len(names), f"{source} ({item})")
            wanted.append((item, pair))
        else:
            ref: str | int = int(item) if item.isdigit() else item
            (pos,) = resolve_bands([ref], scene_names, len(names), source)
            wanted.append((names[pos] or f"band {pos + 1}", (pos,)))
    seen = [w[0] for w in wanted]
    dup = next((n for n in seen if seen.count(n) > 1), None)
    if dup is not None:
        raise ModelError(f"train.pixel_logistic.features: {dup!r} is listed twice ({list(items)})")
    bands = sorted({p for _, ps in wanted for p in ps})
    return bands, [(n, tuple(bands.index(p) for p in ps)) for n, ps in wanted]


def feature_columns(values: np.ndarray, features: Sequence[Feature]) -> list[np.ndarray]:
    """Each feature of pixels ``values`` (``(B, P)`` float64, the model's bands), elementwise."""
    out = []
    for _, pos in features:
        if len(pos) == 1:
            out.append(values[pos[0]])
            continue
        a, b = values[pos[0]], values[pos[1]]
        total = a + b
        out.append(np.where(total == 0.0, 0.0, (a - b) / np.where(total == 0.0, 1.0, total)))
    return out


class PixelLogisticKind:
    """A fitted per-pixel multinomial logistic regression (see the module docstring)."""

    name: ClassVar[str] = "pixel_logistic"
    schema: ClassVar[int] = 1
    input: ClassVar[Literal["features", "pixels"]] = "pixels"
    output: ClassVar[Output] = "pixels"
    window: ClassVar[int | None] = None
    pointwise: ClassVar[bool] = True  # elementwise per pixel: the runner scores each pixel once
    feature_names: ClassVar[tuple[str, ...]] = ()
    monitored: ClassVar[str] = "mean_intensity"

    def __init__(self, doc: dict[str, Any]) -> None:
        """Hold an already checked, already rounded document (use :meth:`fit`/:meth:`from_dict`)."""
        self._doc = doc
        self._classes = PixelClasses.from_params(doc["classes"])
        self._positions = tuple(doc["positions"])
        self._features: list[Feature] = [(f["name"], tuple(f["bands"])) for f in doc["features"]]
        self._present = [k for k, b in enumerate(doc["intercepts"]) if b is not None]
        self._linear = linear(doc, [pos for _, pos in self._features])

    @property
    def classes(self) -> tuple[str, ...]:
        """The model's class names, in order."""
        return self._classes.names

    @property
    def colours(self) -> tuple[str, ...]:
        """Each class's colour, ``#rrggbb``."""
        return self._classes.colours

    @property
    def label_codes(self) -> tuple[tuple[int, ...], ...]:
        """Each class's reference label codes."""
        return self._classes.codes

    @property
    def bands(self) -> tuple[str | int, ...]:
        """The bands the model reads: training-scene names, or 1-based numbers for unnamed ones."""
        return tuple(self._doc["bands"])

    @classmethod
    def output_for(cls, params: dict[str, Any]) -> Output:
        """Always a class per pixel."""
        return "pixels"

    @classmethod
    def fit(cls, train: TrainingSet, params: dict[str, Any], root: Path) -> PixelLogisticKind:
        """Fit on ``train.pixels`` with ``params`` (``train.pixel_logistic`` plus ``pixels``).

        Raises:
            ModelError: no pixel sample, an unknown key or feature, a band the training scene
                lacks, or sample pixels of fewer than two classes.
        """
        unknown = sorted(set(params) - set(PARAM_KEYS))
        if unknown:
            raise ModelError(f"train.pixel_logistic.{unknown[0]}: unknown key")
        sample = train.pixels
        if sample is None or "pixels" not in params:
            raise ModelError("the pixel_logistic kind needs a labelled pixel sample; none given")
        classes = PixelClasses.from_params(params["pixels"]["classes"])
        l2 = float(params.get("l2", 1.0))
        iterations = int(params.get("iterations", 100))
        items = list(params.get("features") or ["bands"])
        positions, features = _features(items, sample.bands, "training scene")
        y = np.asarray(sample.classes, dtype=np.int64)
        present = sorted(set(y.tolist()))
        if len(present) < 2:
            only = classes.names[present[0]] if present else "none"
            raise ModelError(
                f"the labelled training pixels are of one class ({only}, {y.size} pixels); a "
                "pixel_logistic model needs at least two"
            )
        values = np.asarray(sample.values, dtype=np.float64)[:, positions].T
        if not np.isfinite(values).all():
            raise ModelError("the pixel sample holds non-finite values; expected finite pixels")
        columns = feature_columns(values, features)
        mean, std = [], []
        for column in columns:
            m = exact_sum(column) / column.size
            s = (
                1.0
                if column.min() == column.max()
                else math.sqrt(exact_sum((column - m) * (column - m)) / column.size)
            )
            mean.append(round10(m))
            std.append(round10(s) if s > 0.0 else 1.0)
        z = [(c - m) / s for c, m, s in zip(columns, mean, std, strict=True)]
        theta = newton(z, np.searchsorted(present, y), len(present), l2, iterations)
        weights = [[0.0] * len(features) for _ in classes.names]
        intercepts: list[float | None] = [None] * len(classes.names)
        for k, params_k in zip(present, theta, strict=True):
            intercepts[k] = round10(params_k[0])
            weights[k] = [round10(v) for v in params_k[1:]]
        doc: dict[str, Any] = {
            "classes": classes.to_list(),
            "bands": [sample.bands[p] or p + 1 for p in positions],
            "positions": positions,
            "scene_bands": len(sample.bands),
            "features": [{"name": n, "bands": list(b)} for n, b in features],
            "mean": mean,
            "std": std,
            "weights": weights,
            "intercepts": intercepts,
            "l2": round10(l2),
            "iterations": iterations,
            "solver": SOLVER,
            "training": {},
        }
        draft = cls(doc)
        predicted = draft.classify(values)
        accuracy = exact_sum((predicted == y).astype(np.float64)) / y.size
        doc["training"] = {"labelled_pixels": int(y.size), "accuracy": round10(accuracy)}
        return cls(doc)

    def band_indices(self, names: Sequence[str | None], count: int, source: str) -> tuple[int, ...]:
        """The scene's bands the model reads, found by the training scene's names."""
        return resolve_bands(self.bands, names, count, source)

    def _probabilities(self, values: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per present class, scores and probabilities of pixels ``values`` (``(B, P)``)."""
        doc = self._doc
        bad = ~np.isfinite(values).all(axis=0)
        spoilt = bool(bad.any())
        if spoilt:
            values = np.where(bad, 0.0, values)  # any finite value: the features are reset below
        z = []
        for column, m, s in zip(
            feature_columns(values, self._features), doc["mean"], doc["std"], strict=True
        ):
            standard = (column - m) / s
            if spoilt:
                standard[bad] = 0.0  # the training mean
            z.append(standard)
        scores = []
        for k in self._present:
            acc = np.full(values.shape[1], doc["intercepts"][k], dtype=np.float64)
            for column, w in zip(z, doc["weights"][k], strict=True):
                acc += column * w
            scores.append(acc)
        _, exps, total = softmax(scores)
        return scores, [e / total for e in exps]

    def classify(self, values: np.ndarray) -> np.ndarray:
        """Each pixel's class position (int64) from ``(B, P)`` values; ties go to the first."""
        scores, _ = self._probabilities(np.asarray(values, dtype=np.float64))
        best = np.zeros(values.shape[1], dtype=np.int64)
        top = scores[0]
        for j in range(1, len(scores)):
            better = scores[j] > top
            best = np.where(better, j, best)
            top = np.where(better, scores[j], top)
        return np.asarray(self._present, dtype=np.int64)[best]

    def scores(self, x: np.ndarray) -> np.ndarray:
        """``(N, K, H, W)`` float32 class probabilities of ``(N, B, H, W)`` windows (model bands).

        Raises:
            ModelError: ``x`` is not 4-D with the model's band count.
        """
        if x.ndim != 4 or x.shape[1] != len(self._positions):
            raise ModelError(
                f"pixel_logistic input has shape {x.shape}; expected (N, {len(self._positions)}, "
                f"H, W) with bands {list(self.bands)}"
            )
        n, _, h, w = x.shape
        out = np.zeros((n, len(self.classes), h, w), dtype=np.float32)
        scores_into(x, self._linear, out)  # the same arithmetic as _probabilities, in place
        return out

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each tile's majority class among its valid pixels and its share (``x``: every band).

        Raises:
            ModelError: ``x`` does not have the training scene's band count.
        """
        scene_bands = self._doc["scene_bands"]
        if x.ndim != 4 or x.shape[1] != scene_bands:
            raise ModelError(
                f"pixel_logistic tiles have shape {x.shape}; expected (N, {scene_bands}, H, W) "
                "like the training scene"
            )
        valid = valid_pixels(x)
        return majority(self.scores(x[:, list(self._positions)]), valid)

    def provenance(self) -> dict[str, str]:
        """The features the class rasters come from."""
        return {"features": ",".join(n for n, _ in self._features)}

    def to_dict(self) -> dict[str, Any]:
        """The kind's document: JSON-native, every number rounded to 10 significant digits."""
        return {key: self._doc[key] for key in DOCUMENT_KEYS}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str, root: Path | None) -> PixelLogisticKind:
        """Rebuild from :meth:`to_dict`'s document.

        Raises:
            ModelError: the document is malformed, naming ``source``.
        """
        try:
            return cls(check_document(data, source))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: malformed pixel_logistic model: {exc}") from exc

    def details(self) -> dict[str, Any]:
        """The features, bands, classes, penalty, step count and solver."""
        return {
            "features": [n for n, _ in self._features],
            "bands": list(self.bands),
            "classes": list(self.classes),
            "l2": self._doc["l2"],
            "iterations": self._doc["iterations"],
            "solver": SOLVER,
        }


def check_document(data: Any, source: str) -> dict[str, Any]:
    """A copy of a pixel_logistic document after checking its keys, shapes and numbers.

    Raises:
        ValueError: one line naming what is malformed.
    """
    if not isinstance(data, dict) or set(data) != set(DOCUMENT_KEYS):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"keys {got}; expected {', '.join(DOCUMENT_KEYS)}")
    doc = dict(data)
    classes = PixelClasses.from_list(doc["classes"], source)
    k, nb = len(classes.names), len(doc["bands"])
    if k < 2 or len(set(classes.names)) != k:
        raise ValueError(f"classes {list(classes.names)}; expected at least two distinct names")
    if not all(isinstance(b, str | int) and not isinstance(b, bool) for b in doc["bands"]):
        raise ValueError(f"bands {doc['bands']!r}; expected band names or numbers")
    scene = doc["scene_bands"]
    positions = doc["positions"]
    if not isinstance(scene, int) or isinstance(scene, bool) or scene < 1:
        raise ValueError(f"scene_bands {scene!r}; expected an integer >= 1")
    if (
        not isinstance(positions, list)
        or len(positions) != nb
        or not all(isinstance(p, int) and 0 <= p < scene for p in positions)
    ):
        raise ValueError(f"positions {positions!r}; expected {nb} band positions below {scene}")
    features = doc["features"]
    if not isinstance(features, list) or not features:
        raise ValueError(f"features {features!r}; expected a non-empty list")
    for f in features:
        if (
            not isinstance(f, dict)
            or set(f) != {"name", "bands"}
            or not isinstance(f["name"], str)
            or not isinstance(f["bands"], list)
            or len(f["bands"]) not in (1, 2)
            or not all(isinstance(b, int) and 0 <= b < nb for b in f["bands"])
        ):
            raise ValueError(f"feature {f!r}; expected a name and one or two of the {nb} bands")
    nf = len(features)

    def numbers(key: str, value: Any, positive: bool = False) -> None:
        if not isinstance(value, list) or len(value) != nf:
            raise ValueError(f"{key} {value!r}; expected {nf} numbers")
        if not all(is_number(v) and (not positive or v > 0) for v in value):
            raise ValueError(f"{key} {value!r}; expected finite{' positive' if positive else ''}")

    numbers("mean", doc["mean"])
    numbers("std", doc["std"], positive=True)
    if not isinstance(doc["weights"], list) or len(doc["weights"]) != k:
        raise ValueError(f"weights has {doc['weights']!r}; expected one row per class ({k})")
    for row in doc["weights"]:
        numbers("weights", row)
    intercepts = doc["intercepts"]
    if (
        not isinstance(intercepts, list)
        or len(intercepts) != k
        or not all(v is None or is_number(v) for v in intercepts)
        or sum(v is not None for v in intercepts) < 2
    ):
        raise ValueError(f"intercepts {intercepts!r}; expected {k} numbers or nulls, two numbers")
    l2, iterations, training = doc["l2"], doc["iterations"], doc["training"]
    if not is_number(l2) or l2 < 0:
        raise ValueError(f"l2 {l2!r}; expected a number >= 0")
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise ValueError(f"iterations {iterations!r}; expected an integer >= 1")
    if doc["solver"] != SOLVER:
        raise ValueError(f"solver {doc['solver']!r}; expected {SOLVER!r}")
    if (
        not isinstance(training, dict)
        or set(training) != {"labelled_pixels", "accuracy"}
        or not is_number(training["accuracy"])
    ):
        raise ValueError(f"training {training!r}; expected labelled_pixels and accuracy")
    return doc
