"""Stage batch_infer: classify every tile of the index with the model.

Usage: ``python -m stages.batch_infer <model.json> <tile_index.json> <tiles_dir>
<predictions.json> <predictions.geojson> [--run-record runs/batch_infer.json]``;
reads ``batch_infer``. Timings go to the log and the untracked run record only. A model that
reads features defined as the index's (``feature`` in its header) takes them from the index
entries; only a pixel-input model (or another feature definition) reads the tiles.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from satpipe.core import logs
from satpipe.core.files import md5_file, sha256_file, write_json
from satpipe.core.params import load_params
from satpipe.core.records import read_index
from satpipe.inference.batch import check_failures, inference_tiles, run_batch, write_run_record
from satpipe.models import model as model_lib
from satpipe.outputs.footprints import prediction_footprints
from satpipe.tiles.features import FeatureSpec
from stages import _cli, _engine


def main(args: argparse.Namespace) -> None:
    """Classify all tiles; fail only if the failed fraction exceeds the param."""
    params = load_params(args.params)
    model = model_lib.load(args.model)
    logs.set_model(model.version)
    index = read_index(args.index)
    tiles = inference_tiles(index, args.index)
    md5, index_sha = md5_file(args.model), sha256_file(args.index)
    with _engine.engine(params.engine) as engine:
        run = run_batch(
            model,
            md5,
            tiles,
            index_sha,
            Path(args.tiles_dir),
            params.batch_infer,
            engine,
            logs.show_progress(),
            FeatureSpec.from_dict(dict(index.feature)),
        )
    write_run_record(args.run_record, run)
    check_failures(run, params.batch_infer, args.tiles_dir)
    write_json(args.predictions, run.predictions.to_json())
    write_json(args.geojson, prediction_footprints(index, run.predictions.predictions), indent=None)


if __name__ == "__main__":
    p = _cli.parser("batch_infer", __doc__)
    for name, text in [
        ("model", "model JSON"),
        ("index", "tile index JSON"),
        ("tiles_dir", "directory of tile packs (from tile)"),
        ("predictions", "output predictions JSON"),
        ("geojson", "output tile footprints GeoJSON (EPSG:4326)"),
    ]:
        p.add_argument(name, help=text)
    p.add_argument("--run-record", default=None, help="untracked JSON run record with timings")
    sys.exit(_cli.run("batch_infer", main, p.parse_args()))
