"""Stage ingest: acquire one scene, validate it, write it and its metadata.

Usage: ``python -m stages.ingest <scene.tif> <scene.json>``; reads ``ingest`` from params.yaml.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from satpipe.ingest import ingest
from satpipe.params import load_params
from stages import _cli


def main(args: argparse.Namespace) -> None:
    """Ingest the scene described by ``params.ingest``."""
    params = load_params(args.params)
    ingest(params.ingest, Path(args.scene), Path(args.metadata), Path(args.params).parent)


if __name__ == "__main__":
    p = _cli.parser("ingest", __doc__)
    p.add_argument("scene", help="output GeoTIFF")
    p.add_argument("metadata", help="output metadata JSON")
    sys.exit(_cli.run("ingest", main, p.parse_args()))
