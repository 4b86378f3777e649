"""Logging: one structured line per event, carrying stage, model version and tile id.

Library modules only call ``logging.getLogger(__name__)``; entry points call
:func:`configure` once. Records may carry ``extra={"tile": ..., "model": ...}``; the filter fills
in ``-`` where they do not, so every line has the same fields:
``2026-11-20T10:00:00 INFO stage=tile model=- tile=- satpipe.tiles.tiling: message``.
"""

from __future__ import annotations

import logging
import sys

FORMAT = (
    "%(asctime)s %(levelname)s stage=%(stage)s model=%(model)s tile=%(tile)s %(name)s: %(message)s"
)


class _ContextFilter(logging.Filter):
    def __init__(self, stage: str):
        super().__init__()
        self.stage = stage
        self.model = "-"

    def filter(self, record: logging.LogRecord) -> bool:
        record.stage = getattr(record, "stage", self.stage)
        record.model = getattr(record, "model", self.model)
        record.tile = getattr(record, "tile", "-")
        return True


_filter: _ContextFilter | None = None


def configure(stage: str, level: int = logging.INFO) -> None:
    """Send structured log lines for ``stage`` to stderr (replacing earlier handlers)."""
    global _filter
    _filter = _ContextFilter(stage)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%S"))
    handler.addFilter(_filter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # rasterio logs every GDAL error at INFO; the library turns those into our own errors.
    logging.getLogger("rasterio").setLevel(logging.WARNING)


def set_model(version: str) -> None:
    """Stamp every later log line with the model version in use."""
    if _filter is not None:
        _filter.model = version


def show_progress() -> bool:
    """True when a progress bar is useful: stderr is a terminal."""
    return sys.stderr.isatty()
