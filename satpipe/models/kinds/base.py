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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

from satpipe.core.errors import ModelError


@dataclass(frozen=True)
class TrainingSet:
    """What a kind is fitted on.

    Attributes:
        features: ``(N, F)`` float64 feature vectors of the training tiles, columns in
            ``names`` order.
        names: the feature names, one per column.
        references: each tile's reference class, or None where it has none.
        classes: the model's class names, in order.
    """

    features: np.ndarray
    names: tuple[str, ...]
    references: tuple[str | None, ...]
    classes: tuple[str, ...]

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
