"""Building a scene from a STAC item: its bands read in place, window by window, and stacked.

Each chosen asset (see :mod:`satpipe.scenes.stac`) is opened where it lives (``/vsicurl/`` for a
URL, after a :func:`satpipe.scenes.remote.probe`) and read in bands of rows of the scene's grid:
directly when the asset is on that grid, else through a warped VRT that resamples it
(``ingest.stac.resampling``; labels always nearest). Stored values are corrected as
:func:`satpipe.scenes.stac_values.correction` says; a corrected scene is float32 with NaN as
nodata, an uncorrected one keeps the assets' type and nodata. The scene is written as a tiled
GeoTIFF (zstd) that the usual validation then inspects, so a STAC scene is checked like any other.

For reproducibility a remote asset's size, ETag and Last-Modified are recorded, with the sha256
of the pixels read from it (the stored values on the scene's grid, row by row); a pinned sha256
(``ingest.stac.pixels_sha256``) that differs fails the scene, naming the asset.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from satpipe.core.errors import ChecksumError, SatpipeError
from satpipe.core.params import LabelParams, StacParams
from satpipe.core.raster import open_scene
from satpipe.scenes import remote, stac, stac_values

log = logging.getLogger(__name__)

_ROWS = 512


@dataclass(frozen=True)
class StacScene:
    """What ingest records about a scene built from an item."""

    name: str
    source: dict[str, Any]
    acquisition_time: str | None
    labels_href: str | None


def _href_record(href: str) -> str:
    """An href as recorded: a URL as is, a local path by its file name (no absolute path)."""
    return href if remote.is_remote(href) else Path(href).name


def _open(asset: stac.Asset, name: str, stack: ExitStack) -> rasterio.io.DatasetReader:
    try:
        src = stack.enter_context(open_scene(remote.gdal_path(asset.href), name=name))
    except SatpipeError as exc:
        raise stac.StacError(str(exc)) from exc
    return src


def _grid(assets: list[stac.Asset], sources: list[Any], label: str) -> tuple[stac.Grid, str]:
    """The finest asset's grid; every asset must share its CRS."""
    crss = [a.crs or src.crs for a, src in zip(assets, sources, strict=True)]
    if len({c.to_string() for c in crss}) > 1:
        listed = ", ".join(f"{a.key} {c.to_string()}" for a, c in zip(assets, crss, strict=True))
        raise stac.StacError(f"{label}: assets are in different CRSs ({listed}); expected one")
    grids = []
    for a, src in zip(assets, sources, strict=True):
        transform = a.transform or src.transform
        rows, cols = a.shape or (src.height, src.width)
        grids.append((abs(transform.a), a.key, stac.Grid(crss[0], transform, cols, rows)))
    _, key, grid = min(grids, key=lambda g: g[0])
    return grid, key


def _aligned(src: Any, grid: stac.Grid) -> Window | None:
    """The window of ``src`` that is exactly ``grid`` (same pixels), or None."""
    t, g = src.transform, grid.transform
    if (t.a, t.b, t.d, t.e) != (g.a, g.b, g.d, g.e):
        return None
    col, row = ~t @ (g.c, g.f)
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    col, row = round(col), round(row)
    if col < 0 or row < 0 or col + grid.width > src.width or row + grid.height > src.height:
        return None
    return Window(col, row, grid.width, grid.height)


class _Reader:
    """Reads one asset onto the grid, band of rows by band of rows, hashing what it reads."""

    def __init__(
        self, src: Any, grid: stac.Grid, resampling: Resampling, stack: ExitStack, name: str
    ) -> None:
        self.name = name
        self.sha = hashlib.sha256()
        self.nodata = src.nodata
        self.offset = _aligned(src, grid)
        self.src = src
        if self.offset is None:
            self.src = stack.enter_context(
                WarpedVRT(
                    src,
                    crs=grid.crs,
                    transform=grid.transform,
                    width=grid.width,
                    height=grid.height,
                    resampling=resampling,
                    src_nodata=src.nodata,
                    nodata=src.nodata if src.nodata is not None else 0,
                )
            )

    def read(self, row: int, rows: int, width: int) -> np.ndarray:
        """Rows ``row .. row + rows`` of every band, ``(bands, rows, width)``."""
        col0, row0 = (0, 0) if self.offset is None else (self.offset.col_off, self.offset.row_off)
        window = Window(col0, row0 + row, width, rows)
        try:
            data = self.src.read(window=window)
        except RasterioIOError as exc:
            detail = str(exc.__cause__ or exc)
            raise stac.StacError(f"{self.name}: cannot read pixels ({detail})") from exc
        self.sha.update(np.ascontiguousarray(data).data)  # the buffer itself: no copy
        return data


def write_stac_scene(
    params: StacParams,
    labels: LabelParams | None,
    out: Path,
    root: Path,
    *,
    retries: int = 3,
    timeout: float = 30.0,
    item: tuple[dict[str, Any], str] | None = None,
) -> StacScene:
    """Read the item's chosen assets onto the scene grid and write the stacked scene at ``out``.

    Args:
        params: ``ingest.stac`` (item, assets, resampling, area of interest, pins).
        labels: the scene's labels; ``labels.asset`` names the item's label asset, if any.
        out: where the scene GeoTIFF goes (ingest's temporary path).
        root: the directory relative paths are resolved against.
        retries: HTTP retries per request.
        timeout: HTTP timeout, seconds.
        item: the item and its base location, when already read from ``params.item``
            (:func:`satpipe.scenes.stac.load_item`); None reads it here.

    Returns:
        The name for messages, the source record, the acquisition time and the label asset's
        GDAL path (for :func:`satpipe.scenes.label_raster.write_asset_labels`).

    Raises:
        StacError, DownloadError, NotGeoTIFFError: one line naming the item and the asset.
        ChecksumError: an asset's pixels differ from their pinned sha256.
    """
    loaded, base = item if item is not None else stac.load_item(params.item, root, timeout)
    return build_scene(
        loaded, base, f"STAC item {params.item}", params, labels, out, root, retries, timeout
    )


def write_cog_scene(
    url: str, pixels_sha256: str | None, out: Path, *, retries: int = 3, timeout: float = 30.0
) -> StacScene:
    """Read one remote COG (``source: http``, ``fetch: range``) in place into ``out``.

    It is read like a one-asset item: probed, then read in bands of rows over range requests;
    ``pixels_sha256`` pins the sha256 of its pixels.
    """
    tiff = "image/tiff; application=geotiff"
    item = {
        "type": "Feature",
        "id": url,
        "properties": {},
        "assets": {"data": {"href": url, "type": tiff}},
    }
    params = StacParams(
        item=url, assets=["data"], pixels_sha256={"data": pixels_sha256} if pixels_sha256 else None
    )
    scene = build_scene(
        item, url, url, params, None, out, Path("."), retries, timeout, one_file=True
    )
    record = scene.source["assets"]["data"]
    source = {"kind": "http", "url": url, "fetch": "range"}
    source.update({k: record[k] for k in ("size", "etag", "last_modified", "pixels_sha256")})
    return StacScene(url, source, None, None)


def build_scene(
    item: dict[str, Any],
    base: str,
    label: str,
    params: StacParams,
    labels: LabelParams | None,
    out: Path,
    root: Path,
    retries: int,
    timeout: float,
    *,
    one_file: bool = False,
) -> StacScene:
    """Write the scene of an already loaded ``item`` (see :func:`write_stac_scene`).

    ``one_file`` is a single COG's stand-in item: messages name the file, not an asset.
    """
    assets = stac.select_assets(item, params.assets, base, label)
    label_asset = None
    if labels is not None and labels.asset is not None:
        label_asset = stac.select_assets(item, [labels.asset], base, label)[0]
    # Entered before the first /vsicurl/ use: some of its settings are read only once.
    with remote.gdal_env(retries, timeout, files=len(assets)):
        return _build(
            item, label, params, assets, label_asset, out, root, one_file, retries, timeout
        )


def _build(
    item: dict[str, Any],
    label: str,
    params: StacParams,
    assets: list[stac.Asset],
    label_asset: stac.Asset | None,
    out: Path,
    root: Path,
    one_file: bool,
    retries: int,
    timeout: float,
) -> StacScene:
    def where(asset: stac.Asset) -> str:
        return label if one_file else f"{label}: asset {asset.key}"

    everything = [*assets, *([label_asset] if label_asset else [])]
    for asset in everything:
        if not remote.is_remote(asset.href) and not Path(asset.href).is_file():
            raise stac.StacError(f"{where(asset)}: file not found ({asset.href})")

    def check(asset: stac.Asset) -> remote.RemoteFile:
        remote.forget(asset.href)  # this process reads the bytes the probe sees, not a cache
        try:
            return remote.probe(asset.href, retries=retries, timeout=timeout)
        except SatpipeError as exc:
            if one_file:  # the probe's message names the URL already
                raise
            raise type(exc)(f"{where(asset)}: {exc}") from exc

    urls = [a for a in everything if remote.is_remote(a.href)]
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(urls)))) as pool:
        # In parallel (a round trip each); map re-raises the first failure in asset order.
        seen = dict(zip([a.key for a in urls], pool.map(check, urls), strict=True))
    resampling = Resampling[params.resampling]
    with ExitStack() as stack:
        sources = [_open(a, where(a), stack) for a in assets]
        grid, grid_key = _grid(assets, sources, label)
        if params.aoi is not None:
            bounds = stac.aoi_bounds(params.aoi.model_dump(), grid.crs, root, label)
            grid = stac.crop(grid, bounds, label)
        corrections = [stac_values.correction(item, a) for a in assets]
        readers = [
            _Reader(src, grid, resampling, stack, where(a))
            for a, src in zip(assets, sources, strict=True)
        ]
        _write(out, grid, assets, readers, corrections, item)
    records = {}
    for a, reader, corr in zip(assets, readers, corrections, strict=True):
        sha = reader.sha.hexdigest()
        pinned = (params.pixels_sha256 or {}).get(a.key)
        if pinned is not None and pinned != sha:
            key = "ingest.sha256" if one_file else f"ingest.stac.pixels_sha256.{a.key}"
            raise ChecksumError(
                f"{where(a)}: pixels sha256 is {sha}; {key} pins {pinned} (the file changed "
                "under the same href)"
            )
        records[a.key] = {
            "asked_as": a.name,
            "href": _href_record(a.href),
            **(seen[a.key].to_json() if a.key in seen else {}),
            "pixels_sha256": sha,
            "resampling": "none" if reader.offset is not None else params.resampling,
            **corr,
        }
    source = {
        "kind": "stac",
        "item": params.item if remote.is_remote(params.item) else Path(params.item).name,
        "item_id": item.get("id"),
        "collection": item.get("collection"),
        "properties": stac_values.properties_record(item),
        "grid_asset": grid_key,
        "assets": records,
        "aoi": params.aoi.model_dump() if params.aoi is not None else None,
    }
    if label_asset is not None:
        source["labels_asset"] = {
            "key": label_asset.key,
            "href": _href_record(label_asset.href),
            **(seen[label_asset.key].to_json() if label_asset.key in seen else {}),
        }
    props = item.get("properties", {})
    when = props.get("datetime") or props.get("start_datetime")
    labels_href = remote.gdal_path(label_asset.href) if label_asset is not None else None
    return StacScene(label, source, when, labels_href)


def _row_bands(height: int, readers: list[_Reader]) -> Iterator[tuple[int, int]]:
    """Bands of about :data:`_ROWS` rows whose edges fall on the source's block rows.

    An area of interest rarely starts on a block edge; bands of rows counted from its top would
    straddle two block rows each, and every block row would be fetched twice.
    """
    aligned = next((r for r in readers if r.offset is not None), None)
    block = aligned.src.block_shapes[0][0] if aligned is not None else _ROWS
    step = max(block, _ROWS // block * block)
    offset = aligned.offset if aligned is not None else None
    first = (-offset.row_off) % step if offset is not None else 0
    row = 0
    if first:
        yield 0, min(first, height)
        row = first
    while row < height:
        yield row, min(step, height - row)
        row += step


def _descriptions(assets: list[stac.Asset], readers: list[_Reader]) -> list[str]:
    """Band names: the asset key, or for a multi-band asset its bands' own (else ``<key>:<n>``)."""
    out = []
    for asset, reader in zip(assets, readers, strict=True):
        if reader.src.count == 1:
            out.append(asset.key)
        else:
            names = reader.src.descriptions
            out.extend(names[i] or f"{asset.key}:{i + 1}" for i in range(reader.src.count))
    return out


def _write(
    out: Path,
    grid: stac.Grid,
    assets: list[stac.Asset],
    readers: list[_Reader],
    corrections: list[dict[str, Any]],
    item: dict[str, Any],
) -> None:
    corrected = any(c["scale"] != 1.0 or c["offset"] != 0.0 for c in corrections)
    count = sum(r.src.count for r in readers)
    if corrected:
        dtype, nodata = "float32", float("nan")
    else:
        dtype = np.result_type(*[r.src.dtypes[0] for r in readers]).name
        nodata = readers[0].nodata
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": count,
        "dtype": dtype,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": _ROWS,
        "blockysize": _ROWS,
        # zstd level 1: writing was 0.6 of the 1.2 s an AOI ingest works with deflate
        "compress": "zstd",
        "zstd_level": 1,
        "predictor": 3 if corrected else 2,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    }
    when = item.get("properties", {}).get("datetime")
    with rasterio.open(out, "w", **profile) as dst:
        dst.descriptions = tuple(_descriptions(assets, readers))
        for reader in readers:  # a single COG's own tags (its acquisition time) carry over
            dst.update_tags(**reader.src.tags())
        if when:
            dst.update_tags(ACQUISITION_TIME=when)
        for row, rows in _row_bands(grid.height, readers):
            band = np.empty((count, rows, grid.width), dtype=dtype)
            i = 0
            for reader, corr in zip(readers, corrections, strict=True):
                raw = reader.read(row, rows, grid.width)
                if corrected:
                    value = raw.astype(np.float32) * np.float32(corr["scale"])
                    value += np.float32(corr["offset"])
                    if reader.nodata is not None:
                        value[raw == reader.nodata] = np.nan
                    band[i : i + len(raw)] = value
                else:
                    band[i : i + len(raw)] = raw
                i += len(raw)
            dst.write(band, window=Window(0, row, grid.width, rows))
