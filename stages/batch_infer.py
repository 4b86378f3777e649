"""Stage batch_infer: classify every tile of the index with the model.

Usage: ``python -m stages.batch_infer <model.json> <tile_index.json> <tiles_dir>
<predictions.json> <predictions.geojson> [--run-record runs/batch_infer.json]``;
reads ``batch_infer``. Timings go to the log and the untracked run record only. A model that
reads features defined as the index's (``feature`` in its header) takes them from the index
entries, in this process (no worker pool or Dask cluster is started for it); only a pixel-input
model (or another feature definition) reads the tiles, on the configured engine.
"""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from satpipe.core import logs
from satpipe.core.files import md5_file, sha256_file, write_json
from satpipe.core.params import load_params
from satpipe.core.records import read_index
from satpipe.engines.engine import Engine
from satpipe.inference.batch import check_failures, inference_tiles, run_batch, write_run_record
from satpipe.inference.predict import reads_index_features
from satpipe.models import model as model_lib
from satpipe.outputs.footprints import prediction_footprints
from satpipe.tiles.features import FeatureSpec
from stages import _cli, _engine

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Classify all tiles; fail only if the failed fraction exceeds the param."""
    params = load_params(args.params)
    model = model_lib.load(args.model)
    logs.set_model(model.version)
    index = read_index(args.index)
    tiles = inference_tiles(index, args.index)
    md5, index_sha = md5_file(args.model), sha256_file(args.index)
    spec = FeatureSpec.from_dict(dict(index.feature))
    if reads_index_features(model, spec):
        # The features are in the index: a few array operations, not worth a worker pool (or a
        # Dask cluster) to start.
        log.info("%s model: features from the tile index, in this process", model.kind.name)
        engine_context: AbstractContextManager[Engine | None] = nullcontext(None)
    else:
        engine_context = _engine.engine(params.engine)
    with engine_context as engine:
        run = run_batch(
            model,
            md5,
            tiles,
            index_sha,
            Path(args.tiles_dir),
            params.batch_infer,
            engine,
            logs.show_progress(),
            spec,
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
