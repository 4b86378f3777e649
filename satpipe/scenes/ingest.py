"""Ingest: bring one scene into the pipeline, validated, with its metadata.

A scene comes from one of three sources (``ingest.source``): ``synthetic`` (generated from a
seed), ``file`` (a local GeoTIFF, copied) or ``http`` (downloaded and sha256-verified). Whatever
the source, the bytes land in a temporary file beside the output, pass
:func:`satpipe.scenes.validation.inspect_scene`, and only then are the scene and its metadata JSON
renamed into place, so a rejected scene leaves no output behind.

Beside each scene ``<id>.tif`` and its metadata ``<id>.json``, ingest writes ``<id>.preview.tif``
(a decimated copy for quick-looks, from the validation pass) and, when the scene has reference
labels, ``<id>.labels.tif`` (see :mod:`satpipe.scenes.label_raster`): a synthetic scene's own truth,
or the user's label raster resampled onto the scene's grid.
"""

from __future__ import annotations

import logging
import re
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satpipe.core.errors import (
    ChecksumError,
    NoRangeSupportError,
    ParamsError,
    RasterReadError,
    SatpipeError,
    SceneError,
)
from satpipe.core.files import atomic_path, write_json
from satpipe.core.params import IngestParams, SceneParams
from satpipe.core.records import SceneRecord
from satpipe.core.reuse import Reuse, fingerprint
from satpipe.engines.engine import Engine
from satpipe.engines.spec import EngineSpec
from satpipe.scenes import label_raster, stac, synthetic
from satpipe.scenes.download import download
from satpipe.scenes.stac import StacError
from satpipe.scenes.stac_scene import StacScene, write_cog_scene, write_stac_scene
from satpipe.scenes.validation import inspect_scene

log = logging.getLogger(__name__)


def stac_scene_id(item_id: object) -> str | None:
    """A STAC item's ``id`` made into a scene id, a file name (see ``ingest.id``).

    Deterministic: each run of characters other than ASCII letters, digits, ``.``, ``_`` and
    ``-`` becomes one ``-``; leading ``.``, ``_`` and ``-`` are dropped (an id starts with a letter
    or a digit); the first 100 characters are kept, less any trailing ``-``. So
    ``S2A_33UUP_20240715_0_L2A`` stays as it is and ``LC08 L2SR/081119`` becomes
    ``LC08-L2SR-081119``.

    Returns:
        The scene id, or None when the item has no id (not a string, or nothing left of it).
    """
    if not isinstance(item_id, str):
        return None
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", item_id).lstrip("._-")[:100].rstrip("-")
    return safe or None


StacItem = tuple[dict[str, Any], str] | StacError
"""A STAC item read once before the scenes are built: the item and its base, or why not."""


def resolve_scene_ids(
    scenes: list[SceneParams], root: Path, timeout: float
) -> list[tuple[SceneParams, StacItem | None]]:
    """The scenes with their ids settled: a STAC scene without ``id`` takes its item's.

    The item's id is known only once the item is read, so each such item is read here, once,
    before any scene is built, and handed to the scene's build (which then does not read it
    again). An item that cannot be read is handed on as its error: its scene keeps the id its
    params give (:attr:`SceneParams.scene_id`) and fails, or is skipped, when it is built, as any
    invalid scene, without waiting on the item a second time.

    Args:
        scenes: the scenes to ingest, in order.
        root: the directory relative item paths are resolved against.
        timeout: HTTP timeout for an item at a URL, seconds.

    Returns:
        Per scene, in order: the scene, with ``id`` set where it came from its item, and the
        item read for it (None for a scene whose item was not read here).

    Raises:
        ParamsError: two scenes end up with one id.
    """
    out: list[tuple[SceneParams, StacItem | None]] = []
    for scene in scenes:
        loaded: StacItem | None = None
        if scene.id is None and scene.source == "stac" and scene.stac is not None:
            try:
                loaded = stac.load_item(scene.stac.item, root, timeout)
            except StacError as exc:
                loaded = exc
            else:
                sid = stac_scene_id(loaded[0].get("id"))
                scene = scene.model_copy(update={"id": sid}) if sid is not None else scene
        out.append((scene, loaded))
    seen: dict[str, int] = {}
    for i, (scene, _) in enumerate(out):
        if scene.scene_id in seen:
            raise ParamsError(
                f"ingest.scenes: scenes {seen[scene.scene_id]} and {i} share the id "
                f"{scene.scene_id!r}; set a distinct 'id' on one of them"
            )
        seen[scene.scene_id] = i
    return out


def source_record(params: SceneParams) -> dict[str, Any]:
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
    return {"kind": "http", "url": params.url, "fetch": params.fetch}


def _synthetic_labels(params: SceneParams, counts: dict[int, int], file: str) -> dict[str, Any]:
    """Metadata of a synthetic scene's own label raster."""
    mapping = (params.labels.classes if params.labels else None) or synthetic.LABEL_CLASSES
    listed = {code for codes in mapping.values() for code in codes} - {synthetic.LABEL_NODATA}
    return {
        "file": file,
        "classes": mapping,
        "codes": {str(code): name for code, name in synthetic.SURFACES.items()},
        "source": {"kind": "synthetic"},
        "dtype": "uint8",
        "nodata": synthetic.LABEL_NODATA,
        "labelled_fraction": sum(counts[c] for c in listed) / (params.width * params.height),
    }


@dataclass(frozen=True)
class _Acquired:
    """What acquiring a scene says about it besides its bytes."""

    name: str  # how messages name it
    counts: dict[int, int] | None = None  # a synthetic scene's label code counts
    stac: StacScene | None = None  # a STAC scene's record


def _acquire(
    params: SceneParams,
    tmp: Path,
    labels_tmp: Path,
    root: Path,
    retries: int,
    timeout: float,
    stac_item: StacItem | None = None,
) -> _Acquired:
    """Put the scene's bytes at ``tmp``.

    A synthetic scene also writes its label raster at ``labels_tmp`` and returns its code counts.
    """
    if params.source == "synthetic":
        counts = synthetic.write_scene(
            tmp, width=params.width, height=params.height, seed=params.seed, labels_path=labels_tmp
        )
        return _Acquired(f"synthetic scene (seed {params.seed})", counts)
    if params.source == "stac" and params.stac is not None:
        if isinstance(stac_item, StacError):
            raise stac_item
        scene = write_stac_scene(
            params.stac, params.labels, tmp, root, retries=retries, timeout=timeout, item=stac_item
        )
        return _Acquired(scene.name, stac=scene)
    if params.source == "file":
        src = Path(params.path or "")
        src = src if src.is_absolute() else root / src
        if not src.is_file():
            raise RasterReadError(f"{params.path}: file not found (ingest.path)")
        try:
            shutil.copyfile(src, tmp)
        except OSError as exc:
            raise RasterReadError(f"{params.path}: cannot copy: {exc.strerror or exc}") from exc
        return _Acquired(str(params.path))
    if params.url is None:  # SceneParams enforces it
        raise ParamsError("ingest.url is required for source 'http'")
    if params.fetch == "range":
        try:
            scene = write_cog_scene(
                params.url, params.sha256, tmp, retries=retries, timeout=timeout
            )
        except NoRangeSupportError as exc:
            raise type(exc)(f"{exc}; set ingest.fetch: download to fetch it whole") from exc
        return _Acquired(params.url, stac=scene)
    download(params.url, tmp, sha256=params.sha256 or "", retries=retries, timeout=timeout)
    return _Acquired(params.url)


def ingest(
    params: SceneParams,
    scene_out: Path,
    meta_out: Path,
    root: Path,
    *,
    retries: int = 3,
    timeout: float = 30.0,
    stac_item: StacItem | None = None,
) -> SceneRecord:
    """Acquire, validate and write one scene and its metadata.

    The scene's preview and label raster (if any) are written beside ``scene_out`` as
    ``<stem>.preview.tif`` and ``<stem>.labels.tif``.

    Args:
        params: the scene (the ``ingest`` section, or one item of ``ingest.scenes``).
        scene_out: where the validated GeoTIFF goes.
        meta_out: where its metadata JSON goes.
        root: the directory relative ``path`` values are resolved against.
        retries: download retries (``ingest.retries``).
        timeout: download socket timeout in seconds (``ingest.timeout``).
        stac_item: a STAC scene's item as :func:`resolve_scene_ids` read it (or the error it
            met), so that it is not read again; None reads it here.

    Returns:
        The metadata written to ``meta_out``.

    Raises:
        SatpipeError: any validation, download or checksum failure, naming the scene.
    """
    preview_out = scene_out.with_suffix(".preview.tif")
    labels_out = scene_out.with_suffix(".labels.tif")
    with ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(scene_out, suffix=".tif"))
        preview_tmp = stack.enter_context(atomic_path(preview_out, suffix=".tif"))
        if isinstance(params, IngestParams):
            retries, timeout = params.retries, params.timeout
        labelled = params.source == "synthetic" or params.labels is not None
        # Entered only when there are labels, so an unlabelled scene leaves no empty file.
        labels_tmp = (
            stack.enter_context(atomic_path(labels_out, suffix=".tif")) if labelled else tmp
        )
        got = _acquire(params, tmp, labels_tmp, root, retries, timeout, stac_item)
        name = got.name
        meta = inspect_scene(
            tmp,
            nodata_override=params.nodata,
            acquisition_time=params.acquisition_time,
            name=name,
            preview_out=preview_tmp,
        )
        if params.source == "file" and params.sha256 and meta["sha256"] != params.sha256:
            raise ChecksumError(
                f"{params.path}: sha256 is {meta['sha256']}; expected {params.sha256} "
                "(ingest.sha256)"
            )
        if got.counts is not None:
            labels = _synthetic_labels(params, got.counts, labels_out.name)
        elif got.stac is not None and got.stac.labels_href is not None and params.labels:
            labels = {
                "file": labels_out.name,
                **label_raster.write_asset_labels(
                    got.stac.labels_href,
                    f"{name}: asset {params.labels.asset}",
                    params.labels.classes or {},
                    tmp,
                    labels_tmp,
                    retries=retries,
                    timeout=timeout,
                ),
            }
        elif params.labels is not None:
            labels = {
                "file": labels_out.name,
                **label_raster.write_scene_labels(
                    params.labels, tmp, labels_tmp, root, retries=retries, timeout=timeout
                ),
            }
        else:
            labels = None
        step = meta.pop("preview_step")
        record = SceneRecord.from_json(
            {
                **meta,
                "id": params.scene_id,
                "role": params.role,
                "source": got.stac.source if got.stac is not None else source_record(params),
                "preview": {"file": preview_out.name, "step": step},
                "labels": labels,
            },
            name,
        )
        write_json(meta_out, record.to_json())
    log.info(
        "ingested %s: %dx%d, %d bands %s, %s, acquired %s",
        name,
        record.width,
        record.height,
        record.count,
        record.dtypes[0],
        record.crs if record.epsg else "custom CRS",
        record.acquisition_time,
    )
    return record


@dataclass(frozen=True)
class _SceneTask:
    item: SceneParams
    out_dir: Path
    root: Path
    retries: int
    timeout: float
    skip_invalid: bool
    stac_item: StacItem | None = None


def _ingest_task(task: _SceneTask) -> SceneRecord | tuple[str, str]:
    """Ingest one scene into ``out_dir``; a known failure names the scene (or is returned)."""
    sid = task.item.scene_id
    try:
        return ingest(
            task.item,
            task.out_dir / f"{sid}.tif",
            task.out_dir / f"{sid}.json",
            task.root,
            retries=task.retries,
            timeout=task.timeout,
            stac_item=task.stac_item,
        )
    except SatpipeError as exc:
        if task.skip_invalid:
            return sid, f"{type(exc).__name__}: {exc}"
        raise type(exc)(f"scene {sid!r}: {exc}") from exc


def _local_inputs(item: SceneParams, root: Path) -> list[Path]:
    """The local files a scene is read from (its GeoTIFF, labels, STAC item, AOI), if any."""
    refs = [item.path, item.labels.path if item.labels else None]
    if item.stac is not None:
        refs += [item.stac.item, item.stac.aoi.geojson if item.stac.aoi else None]
    paths = []
    for ref in refs:
        if ref and "://" not in str(ref):
            path = Path(ref) if Path(ref).is_absolute() else root / ref
            if path.is_file():
                paths.append(path)
    return paths


def _files(out_dir: Path, sid: str) -> list[str]:
    """The files ingest wrote for scene ``sid`` in ``out_dir``."""
    names = [f"{sid}{suffix}" for suffix in (".tif", ".json", ".preview.tif", ".labels.tif")]
    return [n for n in names if (out_dir / n).is_file()]


def ingest_scenes(
    params: IngestParams,
    out_dir: Path,
    root: Path,
    engine: Engine | None = None,
    reuse: Reuse | None = None,
) -> tuple[list[SceneRecord], dict[str, Any]]:
    """Ingest every scene of ``params`` into ``out_dir`` as ``<id>.tif`` and ``<id>.json``.

    Scenes are validated in parallel on ``engine`` (one task per scene). Without
    ``ingest.skip_invalid`` the first invalid scene, in list order, fails with its id named;
    with it, each invalid scene is left out and listed in the report with its reason. With
    ``reuse``, a scene whose params and local input files are unchanged since the previous run
    is taken from it (:mod:`satpipe.core.reuse`).

    Returns:
        The metadata of every ingested scene (in list order) and the ingest report (scenes
        ingested and skipped, each skipped one with its reason); :func:`ingest_metrics` reads
        its headline.

    Raises:
        SatpipeError: a scene is invalid (and not skipped), or none is left.
    """
    tasks = [
        _SceneTask(item, out_dir, root, params.retries, params.timeout, params.skip_invalid, loaded)
        for item, loaded in resolve_scene_ids(params.scene_list(), root, params.timeout)
    ]
    done: dict[int, SceneRecord] = {}
    prints: dict[int, str] = {}
    if reuse is not None:
        for i, task in enumerate(tasks):
            prints[i] = fingerprint(
                "ingest",
                task.item.model_dump(mode="json"),
                _local_inputs(task.item, root),
            )
            kept = reuse.take(task.item.scene_id, prints[i], out_dir)
            if kept is not None:
                done[i] = SceneRecord.from_json(kept, f"{task.item.scene_id} (reused)")
    todo = [i for i in range(len(tasks)) if i not in done]
    scenes, skipped = [], []
    with ExitStack() as stack:
        engine = engine or stack.enter_context(Engine(EngineSpec(workers=1)))
        # One scene gains nothing from a worker process, and starting one costs ~0.5 s.
        run = [tasks[i] for i in todo]
        computed = dict(
            zip(
                todo,
                map(_ingest_task, run) if len(run) <= 1 else engine.map(_ingest_task, run),
                strict=True,
            )
        )
        for i in range(len(tasks)):
            result = done.get(i) or computed[i]
            if isinstance(result, SceneRecord):
                scenes.append(result)
                if reuse is not None and i in computed:
                    sid = tasks[i].item.scene_id
                    files = _files(out_dir, sid)
                    reuse.put(sid, prints[i], out_dir, files, result.to_json())
            else:
                log.warning("skipped scene %s: %s", *result)
                skipped.append({"id": result[0], "reason": result[1]})
    if done:
        log.info("reused %d of %d scenes unchanged since the last run", len(done), len(tasks))
    if not scenes:
        raise SceneError(f"no valid scene among {len(tasks)}: {skipped[0]['reason']}")
    report = {"scenes_ingested": len(scenes), "scenes_skipped": len(skipped), "skipped": skipped}
    return scenes, report


def ingest_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of an ingest report: the ingest stage's DVC metrics file.

    ``scenes_ingested`` and ``scenes_skipped``, read from the report; the skipped scenes' ids
    and reasons (a list, which is no metric) stay in the report.

    Args:
        report: the report of :func:`ingest_scenes`.
    """
    return {key: report[key] for key in ("scenes_ingested", "scenes_skipped")}
