"""Ingest: bring one scene into the pipeline, validated, with its metadata.

A scene comes from one of three sources (``ingest.source``): ``synthetic`` (generated from a
seed), ``file`` (a local GeoTIFF, copied) or ``http`` (downloaded and sha256-verified). Whatever
the source, the bytes land in a temporary file beside the output, pass
:func:`satpipe.scene.inspect_scene`, and only then are the scene and its metadata JSON renamed
into place, so a rejected scene leaves no output behind.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from satpipe import synthetic
from satpipe.download import download
from satpipe.errors import ChecksumError, ParamsError, RasterReadError
from satpipe.files import atomic_path, write_json
from satpipe.params import IngestParams
from satpipe.scene import inspect_scene

log = logging.getLogger(__name__)


def source_record(params: IngestParams) -> dict[str, Any]:
    """What identifies the scene's origin, with no absolute local path in it."""
    if params.source == "synthetic":
        return {
            "kind": "synthetic",
            "seed": params.seed,
            "width": params.width,
            "height": params.height,
        }
    if params.source == "file":
        path = Path(params.path or "")
        return {"kind": "file", "path": path.name if path.is_absolute() else path.as_posix()}
    return {"kind": "http", "url": params.url}


def _acquire(params: IngestParams, tmp: Path, root: Path) -> str:
    """Put the scene's bytes at ``tmp``; return the name used in messages."""
    if params.source == "synthetic":
        synthetic.write_scene(tmp, width=params.width, height=params.height, seed=params.seed)
        return f"synthetic scene (seed {params.seed})"
    if params.source == "file":
        src = Path(params.path or "")
        src = src if src.is_absolute() else root / src
        if not src.is_file():
            raise RasterReadError(f"{params.path}: file not found (ingest.path)")
        try:
            shutil.copyfile(src, tmp)
        except OSError as exc:
            raise RasterReadError(f"{params.path}: cannot copy: {exc.strerror or exc}") from exc
        return str(params.path)
    if params.url is None or params.sha256 is None:  # IngestParams enforces both for http
        raise ParamsError("ingest.url and ingest.sha256 are required for source 'http'")
    download(params.url, tmp, sha256=params.sha256, retries=params.retries, timeout=params.timeout)
    return params.url


def ingest(params: IngestParams, scene_out: Path, meta_out: Path, root: Path) -> dict[str, Any]:
    """Acquire, validate and write one scene and its metadata.

    Args:
        params: the ``ingest`` section.
        scene_out: where the validated GeoTIFF goes.
        meta_out: where its metadata JSON goes.
        root: the directory relative ``ingest.path`` values are resolved against.

    Returns:
        The metadata written to ``meta_out``.

    Raises:
        SatpipeError: any validation, download or checksum failure, naming the scene.
    """
    with atomic_path(scene_out, suffix=".tif") as tmp:
        name = _acquire(params, tmp, root)
        meta = inspect_scene(
            tmp, nodata_override=params.nodata, acquisition_time=params.acquisition_time, name=name
        )
        if params.source == "file" and params.sha256 and meta["sha256"] != params.sha256:
            raise ChecksumError(
                f"{params.path}: sha256 is {meta['sha256']}; expected {params.sha256} "
                "(ingest.sha256)"
            )
        meta = {"source": source_record(params), **meta}
        write_json(meta_out, meta)
    log.info(
        "ingested %s: %dx%d, %d bands %s, %s, acquired %s",
        name,
        meta["width"],
        meta["height"],
        meta["count"],
        meta["dtypes"][0],
        meta["crs"] if meta["epsg"] else "custom CRS",
        meta["acquisition_time"],
    )
    return meta
