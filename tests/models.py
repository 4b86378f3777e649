"""Small models for tests, built through the same path training uses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from satpipe.core.classes import CLASSES
from satpipe.models import model as model_lib
from satpipe.models.kinds import TrainingSet
from satpipe.tiles.features import FeatureSpec


def threshold_model(
    values: Sequence[float], bins: int = 4, references: Sequence[str | None] | None = None
) -> model_lib.Model:
    """A threshold model (method ``mean``) fitted on these mean intensities."""
    train = TrainingSet(
        np.array(values, dtype=np.float64).reshape(len(values), 1),
        ("mean_intensity",),
        tuple(references or [None] * len(values)),
        CLASSES,
    )
    kind = model_lib.fit_kind("threshold", train, {"method": "mean"}, Path("."))
    training = {"tile_index_sha256": "ab" * 32, "tiles": len(values)}
    return model_lib.build(kind, train, FeatureSpec().to_dict(), training, bins)
