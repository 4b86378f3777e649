"""Model kinds: the table of every kind a model can be.

Adding a kind means writing one module implementing :class:`satpipe.models.kinds.base.Kind`, adding
it to :data:`KINDS`, and testing it; nothing else names a kind.
"""

from __future__ import annotations

from satpipe.core.errors import ModelError
from satpipe.models.kinds.base import Kind, TrainingSet
from satpipe.models.kinds.logistic import LogisticKind
from satpipe.models.kinds.onnx import OnnxKind
from satpipe.models.kinds.pixel_logistic import PixelLogisticKind
from satpipe.models.kinds.threshold import ThresholdKind

KINDS: dict[str, type[Kind]] = {
    ThresholdKind.name: ThresholdKind,
    LogisticKind.name: LogisticKind,
    OnnxKind.name: OnnxKind,
    PixelLogisticKind.name: PixelLogisticKind,
}

__all__ = ["KINDS", "Kind", "TrainingSet", "kind_class"]


def kind_class(name: str) -> type[Kind]:
    """The class of kind ``name``.

    Raises:
        ModelError: an unknown kind, listing the known ones.
    """
    try:
        return KINDS[name]
    except KeyError:
        raise ModelError(
            f"unknown model kind {name!r}; expected one of {', '.join(sorted(KINDS))}"
        ) from None
