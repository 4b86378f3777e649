"""Whole-scene segmentation outputs, streamed: the class COG and the probability COG.

Rows arrive in order, in blocks of any height (:meth:`SegmentWriter.write`), are buffered until a
512-row block row is complete and written (windowed) into a temporary tiled GeoTIFF on disk: the
scene is never held whole (memory: ``512 x width x (2 + P)`` bytes plus GDAL's block cache, which
the stages cap at 16 MiB). :meth:`SegmentWriter.close` has GDAL's COG driver copy each temporary
into a COG (it streams, building overviews from the file) and renames the outputs into place; on
any error the temporaries are removed and nothing half-written remains (a killed run's leftovers
go with the next write of that output, see :func:`satpipe.core.files.remove_stale_temps`).

Class COG: uint8, codes ``0..K-1`` = the model's classes in order, nodata :data:`CLASS_NODATA`
(255); an embedded colour table from the classes' ``#rrggbb`` colours (255 transparent); class
names as GDAL category names (PAM sidecar ``<file>.aux.xml``, which QGIS reads, as in
:mod:`satpipe.outputs.cog`) and as tags ``CLASS_<code>=<name>``; overviews ``NEAREST``, set
explicitly rather than left to GDAL's default for the driver. NEAREST, not MODE: a NEAREST
overview pixel is a real scene pixel, the same one the winner-probability overview holds.

Probability COG, ``winner``: one band, the winning class's byte ``round_half_up(255 p)`` (the
runner computes it), nodata :data:`WINNER_NODATA` (0: the winner's probability is at least 1/K,
so its byte at least 1), overviews NEAREST (paired pixel for pixel with the class overviews).
``all``: K bands (descriptions = class names); every byte is a probability there, so nodata is
an internal dataset mask (masked pixels hold 0), and overviews are AVERAGE, which honours the
mask: the mean of per-pixel class distributions is a distribution (soft class shares).

Both: tiled 512, DEFLATE (readable everywhere, unlike ZSTD), predictor none for classes, else
horizontal; the provenance tags given (model version, md5, window, overlap, blend, batch, ONNX
Runtime version) and ``CLASS_<code>``, sorted by key. Nothing varying between runs (time, paths)
is stored: the same pixels give the same bytes, whatever the block heights.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from satpipe.core.classes import parse_colour
from satpipe.core.files import TEMP_MARK, remove_stale_temps
from satpipe.outputs.cog import aux_path, category_names_xml

log = logging.getLogger(__name__)

CLASS_NODATA = 255
WINNER_NODATA = 0
BLOCK = 512
MAX_CLASSES = 255  # codes 0..254; 255 is nodata
PROBABILITY_RULE = "round_half_up(255*p)"
Probabilities = Literal["winner", "all"]

_STAGE_OPTIONS: dict[str, Any] = {"compress": "ZSTD", "zstd_level": 1, "bigtiff": "IF_SAFER"}
# DEFLATE (libdeflate, bundled with GDAL in the rasterio wheel) level 6: level 9 took 7x longer.
_COG_OPTIONS: dict[str, Any] = dict(
    blocksize=BLOCK, compress="DEFLATE", level=6, overviews="IGNORE_EXISTING", statistics="NO"
)
_COG_OPTIONS["bigtiff"] = "IF_SAFER"
_TAG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class SegmentGrid(Protocol):
    """The scene grid the outputs are on (:class:`satpipe.core.records.SceneInfo` is one)."""

    @property
    def width(self) -> int:
        """Columns."""
        ...

    @property
    def height(self) -> int:
        """Rows."""
        ...

    @property
    def crs_wkt(self) -> str:
        """The CRS as WKT (empty: none)."""
        ...

    @property
    def transform(self) -> Sequence[float] | Affine:
        """The affine transform (its first six coefficients are used)."""
        ...


class SegmentArrays(Protocol):
    """One block of rows, as the runner yields it (``SegmentBlock``).

    ``classes``: ``(rows, width)`` uint8 class positions; ``probabilities``: ``(P, rows, width)``
    uint8, ``round_half_up(255 p)``, P = 1 (the winner's) or K (every class's); ``valid``:
    ``(rows, width)`` bool, False where the output is nodata.
    """

    @property
    def row_off(self) -> int: ...  # noqa: D102 - described above
    @property
    def classes(self) -> np.ndarray: ...  # noqa: D102
    @property
    def probabilities(self) -> np.ndarray: ...  # noqa: D102
    @property
    def valid(self) -> np.ndarray: ...  # noqa: D102


def provenance_tags(version: str, md5: str, provenance: Mapping[str, Any]) -> dict[str, str]:
    """The tags of every class and probability raster: the model, then the run's settings."""
    tags = {"MODEL_VERSION": version, "MODEL_MD5": md5}
    tags.update({k.upper().replace(" ", "_"): str(v) for k, v in provenance.items()})
    return tags


def class_colormap(colours: Sequence[str]) -> dict[int, tuple[int, int, int, int]]:
    """The class COG's colour table: code i in ``colours[i]``, nodata 255 transparent."""
    table = {i: (*parse_colour(c), 255) for i, c in enumerate(colours)}
    table[CLASS_NODATA] = (0, 0, 0, 0)
    return table


def _overview_count(width: int, height: int) -> int:
    """Halvings until the raster fits one block (GDAL's AUTO), but at least one if possible."""
    count = max(0, math.ceil(math.log2(max(width, height) / BLOCK)))  # ceil(side / 2^n) <= 512
    return max(count, 1) if max(width, height) > 1 else 0


class _Staged:
    """One output: a temporary tiled GeoTIFF beside ``dest``, later its COG, then ``dest``.

    The temporaries live in a directory named like :func:`satpipe.core.files.atomic_path`'s
    (``.<name>.satpipe-tmp-*``) and locked while this writer lives, so a concurrent cleanup
    leaves it alone and the next run removes it if this one was killed.
    """

    def __init__(self, dest: Path, profile: dict[str, Any], cog: dict[str, Any]) -> None:
        self.dest = dest
        self.cog = cog
        self.extra: dict[Path, bytes] = {}  # sidecars: final path -> bytes
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(dest)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{TEMP_MARK}", dir=dest.parent))
        self._fd: int | None = os.open(self.dir, os.O_RDONLY)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.stage = self.dir / "stage.tif"
        self.dataset: Any = rasterio.open(self.stage, "w", **profile)

    def build(self) -> None:
        """Close the staging file and copy it into a COG (still a temporary)."""
        if self.dataset is not None:
            self.dataset.close()
            self.dataset = None
        rasterio.shutil.copy(self.stage, self.dir / "cog.tif", driver="COG", **self.cog)
        for path, data in self.extra.items():
            (self.dir / path.name).write_bytes(data)

    def commit(self) -> list[Path]:
        """Rename the COG (and sidecars) into place; returns the final paths."""
        os.replace(self.dir / "cog.tif", self.dest)
        done = [self.dest]
        for path in self.extra:
            os.replace(self.dir / path.name, path)
            done.append(path)
        return done

    def discard(self) -> None:
        """Remove every temporary (safe to call twice)."""
        if self.dataset is not None:
            with contextlib.suppress(Exception):  # cleaning up after another error
                self.dataset.close()
            self.dataset = None
        shutil.rmtree(self.dir, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SegmentWriter:
    """Stream a scene's class and probability rasters to COGs, block row by block row.

    Use as a context manager (an exception inside removes everything; leaving normally calls
    :meth:`close`), or call :meth:`close` / :meth:`abort` yourself.

    Args:
        class_path: the class COG to write (its category names go to ``<class_path>.aux.xml``).
        grid: the scene grid: ``width``, ``height``, ``crs_wkt``, ``transform``.
        classes: the model's class names, in order (code i = ``classes[i]``).
        colours: each class's ``#rrggbb`` colour, in the same order.
        tags: provenance, written to every output (keys ``[A-Za-z_][A-Za-z0-9_.-]*``).
        probability_path: the probability COG to write; None: none.
        probabilities: ``winner`` (one band) or ``all`` (one band per class).

    Raises:
        ValueError: bad classes, colours or tags (a tag may not override the writer's own).
    """

    def __init__(
        self,
        class_path: Path | str,
        grid: SegmentGrid,
        classes: Sequence[str],
        colours: Sequence[str],
        *,
        tags: Mapping[str, str] | None = None,
        probability_path: Path | str | None = None,
        probabilities: Probabilities = "winner",
    ) -> None:
        if not classes or len(classes) > MAX_CLASSES or len(set(classes)) != len(classes):
            raise ValueError(f"classes {list(classes)}: expected 1 to {MAX_CLASSES} distinct names")
        if len(colours) != len(classes):
            raise ValueError(f"{len(colours)} colours for {len(classes)} classes")
        if probabilities not in ("winner", "all"):
            raise ValueError(f"probabilities {probabilities!r}: expected 'winner' or 'all'")
        colormap = class_colormap(colours)
        self.width, self.height = int(grid.width), int(grid.height)
        self.classes = tuple(classes)
        self.mode: Probabilities = probabilities
        own = {f"CLASS_{i}": name for i, name in enumerate(classes)}
        prob_tags = dict(own, PROBABILITY=probabilities, PROBABILITY_RULE=PROBABILITY_RULE)
        for key, value in (tags or {}).items():
            if not _TAG_KEY.match(key) or not isinstance(value, str):
                raise ValueError(f"tag {key!r}={value!r}: expected a name and a string value")
            if key in prob_tags:
                raise ValueError(f"tag {key!r} is the writer's own")
        extra = dict(tags or {})
        crs = CRS.from_wkt(grid.crs_wkt) if grid.crs_wkt else None
        base = dict(_STAGE_OPTIONS, width=self.width, height=self.height, dtype="uint8", crs=crs)
        base.update(driver="GTiff", transform=Affine(*tuple(grid.transform)[:6]), tiled=True)
        base.update(blockxsize=BLOCK, blockysize=BLOCK)
        overviews = _overview_count(self.width, self.height)
        self._outputs: list[_Staged] = []
        try:
            cog = dict(_COG_OPTIONS, overview_count=overviews, overview_resampling="NEAREST")
            out = _Staged(Path(class_path), dict(base, count=1, nodata=CLASS_NODATA), cog)
            self._outputs.append(out)
            out.dataset.write_colormap(1, colormap)  # before pixels: libtiff fixes Photometric
            out.dataset.set_band_description(1, "class")
            out.dataset.update_tags(**dict(sorted((own | extra).items())))
            out.extra[aux_path(out.dest)] = category_names_xml(self.classes).encode()
            self._class = out
            self._prob: _Staged | None = None
            if probability_path is not None:
                winner = probabilities == "winner"
                profile = dict(base, count=1 if winner else len(classes))
                if winner:
                    profile["nodata"] = WINNER_NODATA
                resampling = "NEAREST" if winner else "AVERAGE"
                cog = dict(cog, overview_resampling=resampling, predictor="YES")
                out = _Staged(Path(probability_path), profile, cog)
                self._outputs.append(out)
                names = ["probability of the winning class"] if winner else self.classes
                for band, name in enumerate(names, 1):
                    out.dataset.set_band_description(band, name)
                out.dataset.update_tags(**dict(sorted((prob_tags | extra).items())))
                self._prob = out
        except BaseException:
            self.abort()
            raise
        self.bands = 1 if probabilities == "winner" else len(classes)
        self._classes = np.empty((BLOCK, self.width), np.uint8)
        self._probs = np.empty((self.bands, BLOCK, self.width), np.uint8)
        self._valid = np.empty((BLOCK, self.width), bool)
        self._start = 0  # first scene row of the buffer
        self._filled = 0  # rows in the buffer
        self._done = False
        self.written: list[Path] = []  # the files written, once closed

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None and not self._done:
            self.close()
        else:
            self.abort()

    def write(
        self,
        block: SegmentArrays | int,
        classes: np.ndarray | None = None,
        probabilities: np.ndarray | None = None,
        valid: np.ndarray | None = None,
    ) -> None:
        """Add the next rows: a block object, or ``row_off`` and the three arrays.

        Raises:
            ValueError: rows out of order, past the scene, shapes or dtypes wrong, a class code
                >= K or a winner probability 0 at a valid pixel. The outputs are then removed.
        """
        row_off = block if isinstance(block, int | np.integer) else block.row_off
        if not isinstance(block, int | np.integer):
            classes, probabilities, valid = block.classes, block.probabilities, block.valid
        try:
            if classes is None or probabilities is None or valid is None:
                raise ValueError("write needs classes, probabilities and valid")
            self._check(int(row_off), classes, probabilities, valid)
            rows = classes.shape[0]
            at = 0
            while at < rows:
                n = min(BLOCK - self._filled, rows - at)
                dst = slice(self._filled, self._filled + n)
                self._classes[dst] = classes[at : at + n]
                self._valid[dst] = valid[at : at + n]
                self._fill_probs(dst, classes[at : at + n], probabilities[:, at : at + n])
                self._filled += n
                at += n
                if self._filled == BLOCK or self._start + self._filled == self.height:
                    self._flush()
        except BaseException:
            self.abort()
            raise

    def _check(self, row_off: int, cls: np.ndarray, probs: np.ndarray, valid: np.ndarray) -> None:
        """Refuse rows out of order or of the wrong shape, type or content."""
        if self._done:
            raise ValueError("the writer is closed")
        expected = self._start + self._filled
        if row_off != expected:
            raise ValueError(f"rows start at {row_off}; expected row {expected} (rows in order)")
        rows = cls.shape[0] if cls.ndim == 2 else -1
        if cls.shape != (rows, self.width) or valid.shape != cls.shape:
            raise ValueError(f"classes {cls.shape}, valid {valid.shape}: not (rows, width)")
        if row_off + rows > self.height:
            raise ValueError(f"rows {row_off}..{row_off + rows} run past the scene ({self.height})")
        k = len(self.classes)
        allowed = (1, k) if self.mode == "winner" else (k,)
        if probs.ndim != 3 or probs.shape[0] not in allowed or probs.shape[1:] != cls.shape:
            raise ValueError(f"probabilities {probs.shape}: expected ({allowed}, rows, width)")
        if cls.dtype != np.uint8 or probs.dtype != np.uint8 or valid.dtype != np.bool_:
            raise ValueError("expected uint8 classes and probabilities and a bool valid mask")
        if np.any(valid & (cls >= k)):
            raise ValueError(f"a valid pixel has a class code >= {k}")

    def _fill_probs(self, dst: slice, classes: np.ndarray, probs: np.ndarray) -> None:
        """Buffer the probability rows (the winner's byte, picked when K bands come)."""
        if self.mode == "all" or probs.shape[0] == 1:
            self._probs[:, dst] = probs
        else:  # the winner's byte out of K bands
            index = np.minimum(classes, probs.shape[0] - 1)[None].astype(np.intp)
            self._probs[0, dst] = np.take_along_axis(probs, index, axis=0)[0]

    def _flush(self) -> None:
        """Write the buffered rows (a whole block row, or the scene's last) to the stages."""
        rows, valid = self._filled, self._valid[: self._filled]
        window = Window(0, self._start, self.width, rows)
        out = np.where(valid, self._classes[:rows], np.uint8(CLASS_NODATA))
        self._class.dataset.write(out, 1, window=window)
        if self._prob is not None:
            probs = np.where(valid, self._probs[:, :rows], np.uint8(0))
            if self.mode == "winner" and np.any(valid & (probs[0] == WINNER_NODATA)):
                raise ValueError("a valid pixel has winner probability 0 (the nodata value)")
            self._prob.dataset.write(probs, window=window)
            if self.mode == "all":
                mask = np.where(valid, np.uint8(255), np.uint8(0))
                self._prob.dataset.write_mask(mask, window=window)
        self._start += rows
        self._filled = 0

    def close(self) -> list[Path]:
        """Build the COGs and rename them into place; returns the files written.

        Raises:
            ValueError: not every row was written (the outputs are then removed).
        """
        if self._done:
            raise ValueError("the writer is closed")
        try:
            if self._start != self.height:
                raise ValueError(f"rows {self._start}..{self.height} were never written")
            for out in self._outputs:
                out.build()
            self.written = [path for out in self._outputs for path in out.commit()]
        finally:
            self.abort()
        log.debug("wrote %s", ", ".join(p.name for p in self.written))
        return self.written

    def abort(self) -> None:
        """Remove every temporary; nothing is written (safe to call twice)."""
        self._done = True
        for out in self._outputs:
            out.discard()


def write_segmentation(blocks: Iterable[SegmentArrays], writer: SegmentWriter) -> list[Path]:
    """Write ``blocks`` with ``writer`` and close it (on any error: nothing); returns the files."""
    with writer:
        for block in blocks:
            writer.write(block)
    return writer.written
