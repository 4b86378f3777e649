"""What every per-pixel kind shares: its classes, finding its bands in a scene, tile majorities.

A per-pixel kind (:class:`satpipe.models.kinds.base.PixelKind`) declares its classes in
``train.pixels.classes``: in order, each with a name, the reference label codes that mean it and a
display colour (:class:`PixelClasses`). It names the bands it reads by a scene band name (the
band description, ``B03``), a common name (``green``, ``nir``, ``swir16``: the STAC ``eo``
extension's names, looked up in :data:`COMMON_NAMES` for Sentinel-2 and Landsat 8/9 band names)
or a 1-based band number; :func:`resolve_bands` finds them in a scene, and refuses a scene that
lacks one, naming what the model wants and what the scene has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from satpipe.core.errors import ModelError

# Band name -> STAC eo common name, for the sensors whose band names scenes carry.
COMMON_NAMES: dict[str, str] = {
    # Sentinel-2 MSI
    "B01": "coastal",
    "B1": "coastal",
    "B02": "blue",
    "B2": "blue",
    "B03": "green",
    "B3": "green",
    "B04": "red",
    "B4": "red",
    "B05": "rededge071",
    "B5": "rededge071",
    "B06": "rededge075",
    "B6": "rededge075",
    "B07": "rededge078",
    "B7": "rededge078",
    "B08": "nir",
    "B8": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B9": "nir09",
    "B10": "cirrus",
    "B11": "swir16",
    "B12": "swir22",
}
# Landsat 8/9 OLI names its bands by number too (B2 blue ... B7 swir22); they differ from
# Sentinel-2's from B5 on, so a Landsat scene names its bands by common name (e.g. from STAC).


@dataclass(frozen=True)
class PixelClasses:
    """A per-pixel model's classes: names, reference label codes and colours, in order."""

    names: tuple[str, ...]
    codes: tuple[tuple[int, ...], ...]
    colours: tuple[str, ...]

    @classmethod
    def from_params(cls, classes: Sequence[dict[str, Any]]) -> PixelClasses:
        """From ``train.pixels.classes`` (a list of ``{name, codes, colour}``)."""
        return cls(
            tuple(str(c["name"]) for c in classes),
            tuple(tuple(int(v) for v in c.get("codes") or ()) for c in classes),
            tuple(str(c["colour"]).lower() for c in classes),
        )

    def to_list(self) -> list[dict[str, Any]]:
        """The JSON form stored in a model document (the same shape as the params)."""
        return [
            {"name": n, "codes": list(c), "colour": col}
            for n, c, col in zip(self.names, self.codes, self.colours, strict=True)
        ]

    @classmethod
    def from_list(cls, data: Any, source: str) -> PixelClasses:
        """From :meth:`to_list`'s form.

        Raises:
            ModelError: the list is malformed, naming ``source``.
        """
        try:
            return cls.from_params(list(data))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: malformed pixel classes ({exc})") from exc


def common_name(name: str | None) -> str | None:
    """The common name of a band called ``name`` (itself if it already is one), or None."""
    if not name:
        return None
    if name in COMMON_NAMES.values():
        return name
    return COMMON_NAMES.get(name.upper())


def resolve_bands(
    wanted: Sequence[str | int], names: Sequence[str | None], count: int, source: str
) -> tuple[int, ...]:
    """The 0-based positions in a scene of the bands ``wanted`` names.

    Args:
        wanted: band names (a scene's band description), common names, or 1-based numbers.
        names: the scene's band names, one per band (None where a band has none).
        count: the scene's band count.
        source: how to name the scene in messages.

    Raises:
        ModelError: a wanted band is not in the scene, naming what the model reads and what the
            scene has.
    """
    found: list[int] = []
    for band in wanted:
        matches: list[int]
        if isinstance(band, int):
            matches = [band - 1] if 1 <= band <= count else []
        else:
            matches = [i for i, n in enumerate(names) if n == band]
            if not matches and common_name(band):
                matches = [i for i, n in enumerate(names) if common_name(n) == common_name(band)]
        if not matches:
            shown = [n or f"band {i + 1} (unnamed)" for i, n in enumerate(names[:count])]
            raise ModelError(
                f"{source}: the model reads band {band!r} ({list(wanted)}); the scene has "
                f"{count} bands: {shown}"
            )
        found.append(matches[0])
    return tuple(found)


def majority(probabilities: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each tile's majority class among its valid pixels, and that class's share of them.

    Args:
        probabilities: ``(N, K, H, W)`` per-pixel class probabilities.
        valid: ``(N, H, W)`` bool.

    Returns:
        ``(positions int64 (N,), shares float64 (N,))``; a tile with no valid pixel gets class 0
        and share 0.0. A tie between classes goes to the first.
    """
    n, k = probabilities.shape[:2]
    winners = np.argmax(probabilities, axis=1)  # (N, H, W)
    positions = np.zeros(n, dtype=np.int64)
    shares = np.zeros(n, dtype=np.float64)
    for i in range(n):
        counts = np.bincount(winners[i][valid[i]], minlength=k)
        total = int(counts.sum())
        if total:
            positions[i] = int(np.argmax(counts))
            shares[i] = int(counts[positions[i]]) / total
    return positions, shares


def valid_pixels(x: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` bool: the pixels of ``(N, C, H, W)`` finite in every band."""
    return np.all(np.isfinite(x), axis=1)


__all__ = [
    "COMMON_NAMES",
    "PixelClasses",
    "common_name",
    "majority",
    "resolve_bands",
    "valid_pixels",
]
