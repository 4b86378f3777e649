"""Stitching: the regions of a class raster read in row blocks, merged across the block edges.

A *region* is a 4-connected set of pixels of one class: pixels that touch only at a corner are
two regions. Each block (any number of full-width rows, in order) is labelled (one label per
region of the block, :func:`scipy.ndimage.label`, per class) and the labels are vectorised with
GDAL's polygonize (:func:`rasterio.features.shapes`, 4-connectivity, nodata masked out), so each
label is exactly one polygon. A region that touches the block's last row stays *open*: its parts
are carried to the next block, where the pairs of labels facing each other across the edge with
the same class are joined (union-find, so a region that forks and rejoins is still one). When a
region no longer reaches the block edge its parts are merged into one polygon
(:func:`~satpipe.outputs.polygons_merge.merge`). After each block, :meth:`Stitcher.take` hands
over the regions it finished; :func:`canonical` then gives each its one form.

Geometries are in *pixel space*: x = column, y = row (integers, exact in floating point), so
unions are exact and the result does not depend on where the blocks start. Memory: the current
block, its labels, the open regions' parts, and the regions finished since the last
:meth:`Stitcher.take`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain, pairwise
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from scipy import ndimage
from shapely.geometry import Polygon

from satpipe.outputs.polygons_merge import merge

_FOUR = ndimage.generate_binary_structure(2, 1)  # 4-connectivity
CHUNK_COORDINATES = 1 << 20  # vertices per chunk of the vectorised steps


@dataclass
class _Region:
    """An open region: its class code and the polygons of its parts in the blocks so far."""

    code: int
    parts: list[Polygon] = field(default_factory=list)


def label_block(codes: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label the 4-connected regions of each class in a block.

    Args:
        codes: ``(rows, width)`` class codes.
        valid: where ``codes`` holds a class (not nodata).

    Returns:
        ``(labels, label_codes)``: int32 labels, 0 outside ``valid``, 1.. one per region, and the
        class code of each label (``label_codes[0]`` is unused).
    """
    labels = np.zeros(codes.shape, np.int32)
    label_codes = [0]
    for code in np.unique(codes[valid]).tolist():
        mask = (codes == code) & valid
        part, count = ndimage.label(mask, structure=_FOUR)
        part[mask] += len(label_codes) - 1
        labels += part
        label_codes.extend([int(code)] * count)
    return labels, np.asarray(label_codes, dtype=np.int64)


def vectorise(labels: np.ndarray, row_off: int) -> tuple[np.ndarray, np.ndarray]:
    """Each label's polygon, in pixel space (``row_off`` is the block's first row).

    Returns:
        ``(label_ids, polygons)``: the labels in increasing order and their polygons.
    """
    flushed: list[np.ndarray] = []  # coordinates as arrays: tuples take 7 times the memory
    coords: list[tuple[float, float]] = []
    ring_ends: list[int] = []
    ring_counts: list[int] = []
    values: list[float] = []
    count = 0
    pixel_space = Affine.translation(0, row_off)
    for geojson, value in shapes(labels, mask=labels > 0, connectivity=4, transform=pixel_space):
        rings = geojson["coordinates"]
        for ring in rings:
            coords.extend(ring)
            count += len(ring)
            ring_ends.append(count)
        ring_counts.append(len(rings))
        values.append(value)
        if len(coords) >= CHUNK_COORDINATES:
            flushed.append(_xy(coords))
            coords = []
    if not values:
        return np.zeros(0, np.int64), np.empty(0, dtype=object)
    flushed.append(_xy(coords))
    polygons = shapely.from_ragged_array(
        shapely.GeometryType.POLYGON,
        np.concatenate(flushed),
        (np.concatenate([[0], ring_ends]), np.concatenate([[0], np.cumsum(ring_counts)])),
    )
    del flushed
    label_ids = np.asarray(values, dtype=np.int64)
    order = np.argsort(label_ids, kind="stable")
    label_ids, polygons = label_ids[order], polygons[order]
    unique, first = np.unique(label_ids, return_index=True)
    if len(unique) < len(label_ids):  # one 4-connected region is one polygon; union if not
        polygons = _objects([shapely.union_all(part) for part in np.split(polygons, first[1:])])
    return unique, polygons


def _xy(coords: list[tuple[float, float]]) -> np.ndarray:
    """``(n, 2)`` float64 coordinates."""
    flat = np.fromiter(chain.from_iterable(coords), dtype=np.float64, count=2 * len(coords))
    return flat.reshape(-1, 2)


def _objects(items: list[Any]) -> np.ndarray:
    """A 1-D object array of ``items`` (geometries), whatever numpy would make of them."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


class _Sets:
    """Union-find over hashable keys."""

    def __init__(self) -> None:
        self.parent: dict[tuple[str, int], tuple[str, int]] = {}

    def find(self, key: tuple[str, int]) -> tuple[str, int]:
        root = self.parent.setdefault(key, key)
        while root != self.parent[root]:
            root = self.parent[root]
        while key != root:  # path compression
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a: tuple[str, int], b: tuple[str, int]) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


class Stitcher:
    """Feed row blocks in order (:meth:`add`); collect each region as one pixel-space polygon.

    :meth:`take` gives the regions finished since the last take: their polygons (pixel space,
    not yet canonical) and class codes, in an order fixed by the pixels and the block height.
    """

    def __init__(self) -> None:
        self._done: list[np.ndarray] = []
        self._done_codes: list[np.ndarray] = []
        self._open: dict[int, _Region] = {}  # label in the previous block's last row -> region
        self._edge: tuple[np.ndarray, np.ndarray] | None = None  # that row's codes, labels

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        """``(polygons, codes)`` of the regions finished since the last take, handed over."""
        done, codes = self._done, self._done_codes
        self._done, self._done_codes = [], []
        if not done:
            return np.empty(0, dtype=object), np.zeros(0, np.int64)
        return np.concatenate(done), np.concatenate(codes)

    def add(self, row_off: int, codes: np.ndarray, valid: np.ndarray, last: bool) -> None:
        """Vectorise one block and merge it with the regions open above it.

        Args:
            row_off: the block's first row (pixel space).
            codes: ``(rows, width)`` class codes.
            valid: where ``codes`` holds a class.
            last: no block follows (every region is finished).
        """
        labels, label_codes = label_block(codes, valid)
        label_ids, polygons = vectorise(labels, row_off)
        edge_codes = np.where(valid, codes.astype(np.int64), -1)
        pairs = self._pairs(edge_codes[0], labels[0])
        bottom = np.unique(labels[-1][labels[-1] > 0]) if not last else np.zeros(0, np.int64)
        joined = np.union1d(pairs[:, 1], bottom)
        inside = ~np.isin(label_ids, joined)  # regions inside the block: finished
        self._done.append(polygons[inside])
        self._done_codes.append(label_codes[label_ids[inside]])
        edge_polygons = dict(zip(label_ids[~inside].tolist(), polygons[~inside], strict=True))
        self._join(pairs, set(bottom.tolist()), edge_polygons, label_codes)
        self._edge = None if last else (edge_codes[-1], labels[-1])

    def _pairs(self, top_codes: np.ndarray, top_labels: np.ndarray) -> np.ndarray:
        """``(n, 2)`` distinct (label above, label below) pairs of one class across the edge."""
        if self._edge is None:
            return np.zeros((0, 2), np.int64)
        above_codes, above_labels = self._edge
        same = (above_codes == top_codes) & (above_codes >= 0)
        pairs = np.stack([above_labels[same], top_labels[same]], axis=1).astype(np.int64)
        return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)

    def _join(
        self,
        pairs: np.ndarray,
        bottom: set[int],
        polygons: dict[int, Polygon],
        label_codes: np.ndarray,
    ) -> None:
        """Merge the open regions with the block's labels they meet; carry what stays open."""
        regions = list({id(r): r for r in self._open.values()}.values())  # in edge order
        index = {id(r): i for i, r in enumerate(regions)}
        sets = _Sets()
        for i in range(len(regions)):
            sets.find(("a", i))
        for label in sorted(polygons):
            sets.find(("b", label))
        for above, below in pairs.tolist():
            sets.union(("a", index[id(self._open[above])]), ("b", below))
        groups: dict[tuple[str, int], list[tuple[str, int]]] = {}
        for key in sorted(sets.parent):
            groups.setdefault(sets.find(key), []).append(key)
        carried: dict[int, _Region] = {}
        for members in groups.values():
            labels = [k for side, k in members if side == "b"]
            code = int(label_codes[labels[0]]) if labels else regions[members[0][1]].code
            region = _Region(code)
            for side, k in members:
                region.parts.extend(regions[k].parts if side == "a" else [polygons[k]])
            still_open = [k for k in labels if k in bottom]
            if still_open:
                carried.update(dict.fromkeys(still_open, region))
            else:
                self._finish(code, region.parts)
        self._open = carried

    def _finish(self, code: int, parts: list[Polygon]) -> None:
        geometry = parts[0] if len(parts) == 1 else merge(parts)
        pieces = shapely.get_parts(geometry)  # one Polygon (the region is 4-connected)
        self._done.append(pieces)
        self._done_codes.append(np.full(len(pieces), code, np.int64))


def chunks(geometries: np.ndarray) -> list[slice]:
    """Consecutive slices of ``geometries`` holding about :data:`CHUNK_COORDINATES` vertices each.

    Vectorised steps run chunk by chunk, so their temporary arrays stay small whatever the scene.
    """
    coordinates = CHUNK_COORDINATES
    ends = np.cumsum(shapely.get_num_coordinates(geometries))
    cuts = np.searchsorted(ends, np.arange(coordinates, ends[-1] if len(ends) else 0, coordinates))
    bounds = [0, *np.unique(cuts + 1).tolist(), len(geometries)]
    return [slice(a, b) for a, b in pairwise(bounds) if a < b]


def canonical(polygons: np.ndarray, normalise: bool = True) -> np.ndarray:
    """The one form of each pixel-space polygon: no collinear vertices, normalised.

    The same pixels give the same vertices however the polygon was built (one block, or a union
    of parts from several); normalising fixes their order too. Collinear (and repeated) vertices
    are found exactly (integer coordinates) and vectorised, rather than with
    ``shapely.simplify(g, 0)``, which is ten times slower and gives the same result.

    Args:
        polygons: pixel-space polygons.
        normalise: also :func:`shapely.normalize` them (else the vertex order is arbitrary).
    """
    out = np.empty(len(polygons), dtype=object)
    for part in chunks(polygons):
        _, xy, (ring_offsets, polygon_offsets) = shapely.to_ragged_array(polygons[part])
        xy, ring_offsets = _drop_collinear(xy, ring_offsets)
        rebuilt = shapely.from_ragged_array(
            shapely.GeometryType.POLYGON, xy, (ring_offsets, polygon_offsets)
        )
        out[part] = shapely.normalize(rebuilt) if normalise else rebuilt
    return out


def _drop_collinear(xy: np.ndarray, ring_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed rings (``xy[ring_offsets[i]:ring_offsets[i + 1]]``) without collinear vertices.

    A vertex stays where the direction turns (the cross product of its edges in and out is not
    zero). The test runs :data:`CHUNK_COORDINATES` vertices at a time, so a ring of millions of
    vertices needs no more temporaries than that.
    """
    ring_offsets = ring_offsets.astype(np.int64)
    keep = np.zeros(len(xy), bool)
    for first in range(0, len(xy), CHUNK_COORDINATES):
        i = np.arange(first, min(first + CHUNK_COORDINATES, len(xy)))
        ring = np.searchsorted(ring_offsets, i, side="right") - 1
        start, closing = ring_offsets[ring], ring_offsets[ring + 1] - 1
        before = np.where(i == start, closing - 1, i - 1)  # a ring's first vertex: its last
        after = np.minimum(i + 1, len(xy) - 1)  # the closing vertex repeats the first
        d_in, d_out = xy[i] - xy[before], xy[after] - xy[i]
        turns = d_in[:, 0] * d_out[:, 1] != d_in[:, 1] * d_out[:, 0]
        keep[first : first + len(i)] = turns & (i != closing)
    counts = np.add.reduceat(keep, ring_offsets[:-1], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts + 1)])  # each ring closed again
    opened = np.ones(offsets[-1], bool)
    opened[offsets[1:] - 1] = False
    out = np.empty((offsets[-1], 2), dtype=np.float64)
    out[opened] = xy[keep]
    out[offsets[1:] - 1] = out[offsets[:-1]]
    return out, offsets
