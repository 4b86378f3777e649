"""Reference labels: a raster of integer class codes on a scene's grid, and each tile's class.

A scene may come with a *label raster*: one band of integer codes (Sentinel-2's Scene
Classification, a land-cover map, a hand-drawn mask) and a mapping from class names to the codes
that mean them (``ingest.labels.classes``); codes not listed are unlabelled. The names are the
ones the model will be judged with: ``dark``/``bright`` for the default threshold, or whatever
classes a logistic or ONNX model declares (``train.classes``, ``train.onnx.classes``). At ingest the
raster is validated and resampled onto the scene's grid with nearest-neighbour resampling, window
by window through a warped VRT (never read whole), and written beside the scene as
``<id>.labels.tif`` with its codes unchanged; pixels outside the raster's footprint or at its
nodata value are unlabelled. Synthetic scenes write their own truth there (see
:mod:`satpipe.scenes.synthetic`).

The resampling is :mod:`satpipe.scenes.label_raster`'s; this module holds what the tile stage needs.
When tiles are cut, each tile's *labelled fraction* is the share of its window's pixels whose
code is listed, and its *reference* is the class of the majority of those pixels, provided the
labelled fraction is at least ``tile.min_labelled_fraction``; otherwise it has none. A tie
between classes goes to the class whose name sorts first (the mapping's own order does not
survive JSON, and the model's is not known when tiles are cut).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelLookup:
    """Code -> class position, as two sorted arrays (works for any integer code range).

    Positions index :attr:`names`, the mapping's class names in sorted order.
    """

    codes: np.ndarray
    classes: np.ndarray
    nodata: int | None
    names: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, mapping: dict[str, list[int]], nodata: int | None) -> LabelLookup:
        """Build the lookup from ``{class: [codes]}``."""
        names = tuple(sorted(mapping))
        pairs = sorted(
            (code, names.index(name)) for name, codes in mapping.items() for code in codes
        )
        return cls(
            np.array([c for c, _ in pairs], dtype=np.int64),
            np.array([k for _, k in pairs], dtype=np.int16),
            nodata,
            names,
        )

    def classify(self, codes: np.ndarray) -> np.ndarray:
        """Class position of every pixel of ``codes``; -1 where unlabelled."""
        flat = codes.astype(np.int64, copy=False).ravel()
        out = np.full(flat.shape, -1, dtype=np.int16)
        if self.codes.size:
            pos = np.clip(np.searchsorted(self.codes, flat), 0, self.codes.size - 1)
            hit = self.codes[pos] == flat
            if self.nodata is not None:
                hit &= flat != self.nodata
            out[hit] = self.classes[pos[hit]]
        return out.reshape(codes.shape)

    def class_counts(self, codes: np.ndarray, n_classes: int) -> np.ndarray:
        """How many pixels of ``codes`` belong to each of ``n_classes`` classes.

        8- and 16-bit codes are counted with one histogram of the code values (about 40 times
        faster than :meth:`classify` on a 256 x 256 tile); wider types go through
        :meth:`classify`.
        """
        if codes.dtype.kind not in "iu" or codes.dtype.itemsize > 2:
            classes = self.classify(codes)
            return np.bincount(classes.ravel() + 1, minlength=n_classes + 1)[1:]
        low = int(np.iinfo(codes.dtype).min)  # signed codes are shifted to start at 0
        flat = codes.ravel() if low == 0 else codes.ravel().astype(np.int32) - low
        hist = np.bincount(flat, minlength=1 << (8 * codes.dtype.itemsize))
        counts = np.zeros(n_classes, dtype=np.int64)
        for code, k in zip(self.codes.tolist(), self.classes.tolist(), strict=True):
            if code != self.nodata and 0 <= code - low < hist.size:
                counts[k] += hist[code - low]
        return counts


@dataclass(frozen=True)
class TileReference:
    """A tile's reference: its labelled fraction and majority class (None below the minimum)."""

    labelled_fraction: float
    reference: str | None


def tile_reference(codes: np.ndarray, lookup: LabelLookup, min_fraction: float) -> TileReference:
    """The reference of one tile from the label codes of its window (see module docstring)."""
    order = lookup.names
    counts = lookup.class_counts(codes, len(order))
    labelled = int(counts.sum())
    fraction = labelled / codes.size if codes.size else 0.0
    if labelled == 0 or fraction < min_fraction:
        return TileReference(fraction, None)
    return TileReference(fraction, order[int(np.argmax(counts))])  # argmax: first of a tie
