"""Stage ingest: acquire the scenes, validate them, write each with its metadata.

Usage: ``python -m stages.ingest <scenes_dir> <manifest.json> <metrics.json> <report.json>``;
reads ``ingest`` (and ``engine``, which is not a DVC param). Each scene becomes
``<scenes_dir>/<id>.tif`` and ``<id>.json``; the manifest lists them in order. The directory
appears only when every scene is written. The metrics count the scenes ingested and skipped; the
report also names each skipped scene with its reason. A scene unchanged since the last run
(same params, same local input files, same code) is kept from it, not ingested again: the
directory is a persistent DVC output (see :mod:`satpipe.core.reuse`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from satpipe.core.files import atomic_dir, write_json
from satpipe.core.params import load_params
from satpipe.core.records import manifest_json
from satpipe.core.reuse import Reuse
from satpipe.scenes.ingest import ingest_metrics, ingest_scenes
from stages import _cli, _engine


def main(args: argparse.Namespace) -> None:
    """Ingest the scenes described by ``params.ingest``."""
    params = load_params(args.params)
    reuse = Reuse.open("ingest", args.scenes_dir)
    root = Path(args.params).parent
    with atomic_dir(args.scenes_dir) as tmp, _engine.engine(params.engine) as engine:
        scenes, report = ingest_scenes(params.ingest, tmp, root, engine, reuse)
    reuse.save()
    write_json(args.manifest, manifest_json(scenes))
    write_json(args.report, report)
    write_json(args.metrics, ingest_metrics(report))


if __name__ == "__main__":
    p = _cli.parser("ingest", __doc__)
    p.add_argument("scenes_dir", help="output directory of scene GeoTIFFs and metadata")
    p.add_argument("manifest", help="output JSON listing the scenes")
    p.add_argument("metrics", help="output ingest metrics JSON (a DVC metrics file)")
    p.add_argument("report", help="output ingest report JSON (skipped scenes with reasons)")
    sys.exit(_cli.run("ingest", main, p.parse_args()))
