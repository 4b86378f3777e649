"""The tile grid: where tiles start along each axis of a scene, and how tiles are named.

Along one axis of length ``n``, tiles of ``size`` pixels start every ``stride`` pixels:
``floor((n - size) / stride) + 1`` *full* tiles at offsets ``k * stride`` (``offset + size <= n``),
and one *partial* edge tile at the next offset ``p`` when the full tiles leave pixels uncovered
at the edge and ``p`` still starts inside the scene (``p < n < p + size``). Pure arithmetic, so
modules that only need the grid (the prediction maps) do not import the tiler.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Axis", "axis_offsets", "tile_id"]


@dataclass(frozen=True)
class Axis:
    """Tile offsets along one axis: the full ones and the partial edge one (if any)."""

    full: tuple[int, ...]
    partial: int | None


def axis_offsets(length: int, size: int, stride: int) -> Axis:
    """Offsets of the tile grid along an axis of ``length`` pixels (see module docstring)."""
    if length < size:
        return Axis((), 0)
    n_full = (length - size) // stride + 1
    full = tuple(k * stride for k in range(n_full))
    last = full[-1]
    partial = last + stride if last + max(size, stride) < length else None
    return Axis(full, partial)


def tile_id(row_off: int, col_off: int) -> str:
    """Deterministic tile id from the window offsets."""
    return f"r{row_off:06d}_c{col_off:06d}"
