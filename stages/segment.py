"""Stage segment: run a per-pixel model over every inference scene, whole.

Usage: ``python -m stages.segment <model.json> <scenes.json> <scenes_dir> <segments_dir>
<report.json>``; reads ``segment`` (and ``engine``, which is not a DVC param). For each scene
whose role is ``infer`` or ``both``, writes ``<segments_dir>/<id>.class.tif`` (+ ``.aux.xml``: the
class names), ``<id>.probability.tif`` (Cloud-Optimized GeoTIFFs) and ``<id>.json`` (what the run
saw: class shares, probabilities, seams, a band sample; health reads it), and
``<segments_dir>/index.json`` listing them. A tile-label model has nothing to segment: the index
says so and lists no scene. The directory appears only when every file is written. Timings go
to the log only.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, cast

from satpipe.core import logs
from satpipe.core.files import atomic_dir, md5_file, write_json
from satpipe.core.params import load_params
from satpipe.core.records import read_manifest
from satpipe.inference.malloc import release_large_buffers
from satpipe.models import model as model_lib
from satpipe.models.kinds.base import PixelKind
from stages import _cli

log = logging.getLogger(__name__)

INDEX = "index.json"


def main(args: argparse.Namespace) -> None:
    """Segment every inference scene (or, for a tile-label model, write an empty index)."""
    params = load_params(args.params)
    release_large_buffers()  # the stitching's large arrays go back to the kernel when freed
    model = model_lib.load(args.model)
    logs.set_model(model.version)
    scenes = [s for s in read_manifest(args.manifest) if s.role in ("infer", "both")]
    md5 = md5_file(args.model)
    index: dict[str, Any] = {"output": model.output, "model_version": model.version, "scenes": []}
    report: dict[str, Any] = {**index, "settings": None, "scenes": {}}
    with atomic_dir(args.segments_dir) as tmp:
        if model.output == "pixels":
            # the runner, the engine and the writer: a tile-label model has nothing to segment
            from satpipe.evaluation.mask_health import scene_summary
            from satpipe.inference.segment import SceneSegmentation, settings_for
            from satpipe.outputs.segmentation import SegmentWriter, provenance_tags
            from stages import _engine

            kind = cast(PixelKind, model.kind)
            settings = settings_for(kind, params.segment)
            report["settings"] = {
                "window": settings.window,
                "overlap": settings.overlap,
                "blend": settings.blend,
                "batch": settings.batch,
                "probabilities": settings.probabilities,
            }
            with _engine.engine(params.engine) as engine:
                for scene in scenes:
                    started = time.perf_counter()
                    run = SceneSegmentation(
                        Path(args.model),
                        scene,
                        Path(args.scenes_dir) / f"{scene.id}.tif",
                        settings,
                        engine,
                    )
                    names = {
                        "class": f"{scene.id}.class.tif",
                        "probability": f"{scene.id}.probability.tif",
                        "summary": f"{scene.id}.json",
                    }
                    with SegmentWriter(
                        tmp / names["class"],
                        scene,
                        model.classes,
                        kind.colours,
                        tags=provenance_tags(model.version, md5, run.provenance),
                        probability_path=tmp / names["probability"],
                        probabilities=settings.probabilities,
                    ) as writer:
                        for block in run.blocks():
                            writer.write(block)
                    summary = scene_summary(run.stats, model)
                    write_json(tmp / names["summary"], summary)
                    index["scenes"].append({"id": scene.id, **names})
                    report["scenes"][scene.id] = {
                        "valid_pixels": summary["valid_pixels"],
                        "class_shares": summary["class_shares"],
                        "seam": summary["seam"],
                        "windows": summary["windows"],
                    }
                    log.info(
                        "segmented %s (%dx%d) in %.1f s: %s",
                        scene.id,
                        scene.width,
                        scene.height,
                        time.perf_counter() - started,
                        ", ".join(f"{k} {v:.1f} s" for k, v in run.seconds.items()),
                    )
        else:
            log.info("model %s labels tiles: nothing to segment", model.version)
        write_json(tmp / INDEX, index)
    write_json(args.report, report)


if __name__ == "__main__":
    p = _cli.parser("segment", __doc__)
    for name, text in [
        ("model", "model JSON"),
        ("manifest", "scenes manifest JSON (from ingest)"),
        ("scenes_dir", "directory of scenes (from ingest)"),
        ("segments_dir", "output directory of class and probability COGs and scene summaries"),
        ("report", "output segmentation report JSON"),
    ]:
        p.add_argument(name, help=text)
    sys.exit(_cli.run("segment", main, p.parse_args()))
