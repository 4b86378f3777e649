"""The model-kind interface: what every kind of model implements, and the data it is fitted on.

A *kind* is one way of turning a tile into a class: a threshold on one feature, a logistic
regression on the feature vector, an ONNX graph a team trained elsewhere. Each kind is one module
in :mod:`satpipe.models.kinds` implementing :class:`Kind`, registered in
:data:`satpipe.models.kinds.KINDS`. Nothing outside its module names a kind: stages, serving, drift
and outputs go through :class:`satpipe.models.model.Model`, which wraps a kind with what every
model carries (classes, feature definition, training provenance, reference distribution, version).

A kind reads either the tile's *feature vector* (``input == "features"``: the named per-tile
features of :mod:`satpipe.tiles.features`, in the order of :attr:`Kind.feature_names`) or its
*pixels* (``input == "pixels"``: float32 ``(N, bands, size, size)``). ``predict`` works on a
batch and returns, per tile, the position of its class in the model's class list and a score
(what the score means is the kind's to document: a margin, a probability).

A kind's *output* is a class per tile (``"tile"``) or a class per pixel (``"pixels"``, semantic
segmentation). A per-pixel kind (:class:`PixelKind`) also gives each pixel a probability per class
(:meth:`PixelKind.scores`), which :mod:`satpipe.inference.segment` blends over whole scenes; its
``predict`` labels a tile with the majority class of its valid pixels, so every tile-level path
(batch inference, the service, tile health) works for it unchanged. Stages branch on the output
type only where the output itself differs (whole-scene rasters, per-pixel scores).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeAlias

import numpy as np

from satpipe.core.errors import ModelError

Output = Literal["tile", "pixels"]
"""What a kind labels: a whole tile, or every pixel."""


@dataclass(frozen=True)
class PixelSample:
    """Labelled pixels a per-pixel kind is fitted on (a deterministic sample of training tiles).

    Attributes:
        values: ``(N, C)`` float64, each pixel's value in every band of its scene, in scene order,
            in the scene's own units (digital numbers).
        classes: ``(N,)`` int64, each pixel's reference class position in the model's classes.
        bands: the scene's band names (its band descriptions; ``""`` where a band has none).
    """

    values: np.ndarray
    classes: np.ndarray
    bands: tuple[str, ...]


@dataclass(frozen=True)
class TrainingSet:
    """What a kind is fitted on.

    Attributes:
        features: ``(N, F)`` float64 feature vectors of the training tiles, columns in
            ``names`` order.
        names: the feature names, one per column.
        references: each tile's reference class, or None where it has none.
        classes: the model's class names, in order.
        pixels: for a per-pixel kind, the labelled pixel sample (None for tile kinds).
    """

    features: np.ndarray
    names: tuple[str, ...]
    references: tuple[str | None, ...]
    classes: tuple[str, ...]
    pixels: PixelSample | None = None

    def labelled(self) -> tuple[np.ndarray, np.ndarray]:
        """The labelled tiles' feature rows and class positions (int64).

        Raises:
            ModelError: a reference names a class the model does not have.
        """
        self.check_references()
        rows = [i for i, ref in enumerate(self.references) if ref is not None]
        y = np.array([self.classes.index(self.references[i]) for i in rows], dtype=np.int64)
        return self.features[rows], y

    def check_references(self) -> None:
        """Refuse reference classes the model does not have.

        Raises:
            ModelError: naming the first unknown class and the model's classes.
        """
        unknown = sorted({r for r in self.references if r is not None} - set(self.classes))
        if unknown:
            raise ModelError(
                f"training reference class {unknown[0]!r} is not a model class; expected one of "
                f"{', '.join(self.classes)} (map the labels onto them in ingest.labels.classes, "
                "or declare the classes in train.classes)"
            )


class Kind(Protocol):
    """One kind of model (see the module docstring)."""

    name: ClassVar[str]
    """The kind's name in ``train.model`` and in model documents."""
    schema: ClassVar[int]
    """Version of the kind's own document (:meth:`to_dict`)."""

    @property
    def input(self) -> Literal["features", "pixels"]:
        """What :meth:`predict` takes (a class constant, or per instance as for ONNX graphs)."""
        ...

    @property
    def output(self) -> Output:
        """What the kind labels: ``tile`` or ``pixels`` (see the module docstring)."""
        ...

    @classmethod
    def output_for(cls, params: dict[str, Any]) -> Output:
        """The output a kind fitted with ``params`` will have (before fitting it)."""
        ...

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The features :meth:`predict` reads, in column order (empty for pixel input)."""
        ...

    @property
    def monitored(self) -> str:
        """The feature whose distribution drift monitoring compares with training."""
        ...

    @classmethod
    def fit(cls, train: TrainingSet, params: dict[str, Any], root: Path) -> Kind:
        """Fit (or, for a pre-trained kind, load and check) the kind.

        Args:
            train: the training tiles.
            params: the kind's params (from ``train`` in params.yaml).
            root: the directory relative paths in ``params`` are resolved against.

        Raises:
            ModelError: one line naming what is wrong.
        """
        ...

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classify a batch: ``(class positions int64 (N,), scores float64 (N,))``."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The kind's JSON document (deterministic: same model, same bytes)."""
        ...

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str, root: Path | None) -> Kind:
        """Rebuild the kind from :meth:`to_dict`'s document.

        Raises:
            ModelError: the document is malformed, naming ``source``.
        """
        ...

    def details(self) -> dict[str, Any]:
        """What ``/model`` shows about the kind (e.g. the threshold)."""
        ...


class PixelKind(Kind, Protocol):
    """A kind that classifies every pixel (``output == "pixels"``, ``input == "pixels"``).

    Its ``predict`` takes a batch of tiles' pixels, ``(N, C, H, W)`` float32 in *every* band of
    the scene (NaN marks an invalid pixel), picks its own bands, and returns each tile's majority
    class among its valid pixels and that class's share of them.
    """

    @property
    def window(self) -> int | None:
        """The window side the model needs (an ONNX graph's fixed size), or None for any."""
        ...

    @property
    def pointwise(self) -> bool:
        """Whether a pixel's scores depend on its own bands only (not on its neighbours).

        The whole-scene runner then scores each pixel once (no overlap, no blending): the bytes
        are the same as with overlapping windows, since every window gives a pixel equal scores.
        """
        ...

    @property
    def colours(self) -> tuple[str, ...]:
        """Each class's display colour, ``#rrggbb``, in class order."""
        ...

    @property
    def label_codes(self) -> tuple[tuple[int, ...], ...]:
        """Each class's reference label codes, in class order (``train.pixels.classes``)."""
        ...

    def band_indices(self, names: Sequence[str | None], count: int, source: str) -> tuple[int, ...]:
        """The 0-based bands of a scene with ``count`` bands named ``names`` the model reads.

        Raises:
            ModelError: the scene lacks a band the model reads, naming both band lists.
        """
        ...

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Per-pixel class probabilities of a batch of windows.

        Args:
            x: ``(N, B, H, W)`` float32, the model's bands (in :meth:`band_indices` order) in the
                scene's units; NaN marks invalid pixels (the kind fills them; their scores are
                ignored).

        Returns:
            ``(N, K, H, W)`` float32 probabilities (each pixel's sum is 1 up to rounding).
        """
        ...

    def provenance(self) -> dict[str, str]:
        """What the outputs' tags record about the run (e.g. the ONNX Runtime version)."""
        ...


PixelStages: TypeAlias = tuple[
    Callable[[np.ndarray], Any], Callable[[Any], Any], Callable[[Any], np.ndarray]
]
"""``prepare``, ``run`` and ``finish``: a kind's :meth:`PixelKind.scores` in three steps."""


class StagedPixelKind(PixelKind, Protocol):
    """A :class:`PixelKind` whose scoring comes in stages a runner may overlap (optional).

    ``finish(run(prepare(x)))`` is ``scores(x)``, bit for bit. ``run`` is the model alone (an
    ONNX Runtime ``session.run``, which releases the GIL); ``prepare`` (normalisation) and
    ``finish`` (softmax) are array work that may run in other threads meanwhile, for other
    batches. Each is called on one batch at a time and keeps no state between calls.
    """

    def stages(self) -> PixelStages:
        """The three steps (see the class docstring)."""
        ...
