"""Benchmark ingest of a STAC item: local files against the same COGs read in place over HTTP.

Usage::

    python benchmarks/stac_ingest.py                  # 10980^2, 4 bands, AOI 2048^2
    python benchmarks/stac_ingest.py --size 5490 --aoi 1024

Writes four single-band uint16 COGs (B02, B03, B04, B08: random values, deflate, 512^2 tiles,
so compression does not hide the transfer) on one 10 m grid, and two copies of a STAC item
pointing at them: by relative path, and by URL on a range-capable server on 127.0.0.1 (the test
suite's). Then runs ``python -m stages.ingest`` (the dvc.yaml command, in its own process) four
times, side by side in one run: the full scene from the local files, the full scene over HTTP,
and an area of interest of ``--aoi``^2 pixels both ways. Prints wall time, the bytes the server
sent, peak memory (PSS of the stage's process tree, sampled as in ``pipeline.py``), and for the
area of interest its time and bytes as a fraction of the full scene's, next to its share of the
pixels, with and without the stage's start-up (interpreter and imports, measured in the run).

Targets (issue 10): full scene over HTTP within 1.5x of local files; the area of interest's time
and bytes within 2x of its share of the pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from affine import Affine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.pipeline import run as measured_run  # noqa: E402
from tests.range_server import RangeServer  # noqa: E402
from tests.stac_standins import write_standin  # noqa: E402

BANDS = ("B02", "B03", "B04", "B08")
ORIGIN = (300000.0, 2300040.0)


def _item(hrefs: dict[str, str]) -> dict:
    tiff = "image/tiff; application=geotiff; profile=cloud-optimized"
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "bench",
        "properties": {"datetime": "2020-07-14T11:55:52Z", "proj:epsg": 32628},
        "assets": {k: {"href": h, "type": tiff} for k, h in hrefs.items()},
    }


def _ingest(work: Path, item: Path, aoi: list[float] | None) -> tuple[float, float]:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stac = {"item": str(item), "assets": list(BANDS)}
    if aoi is not None:
        stac["aoi"] = {"bbox": aoi, "crs": "EPSG:32628"}
    params["ingest"].update({"source": "stac", "stac": stac, "labels": None, "id": "bench"})
    work.mkdir(parents=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, "-m", "stages.ingest", "scenes", "scenes.json", "ingest.json", "r.json"]
    seconds, tree, _ = measured_run(cmd, work)
    return seconds, tree


def main() -> None:
    """Write the COGs, run the four ingests, print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=10980, help="scene side, pixels")
    p.add_argument("--aoi", type=int, default=2048, help="area of interest side, pixels")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="stac-bench-") as tmp:
        root = Path(tmp)
        www = root / "www"
        transform = Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])
        start = time.perf_counter()
        for i, key in enumerate(BANDS):
            write_standin(
                www / f"{key}.tif",
                transform,
                args.size,
                args.size,
                "EPSG:32628",
                kind="noise",
                dtype="uint16",
                seed=i,
                overviews=False,
            )
        total = sum((www / f"{k}.tif").stat().st_size for k in BANDS)
        print(
            f"wrote {len(BANDS)} COGs of {args.size}^2 ({total / 2**20:.0f} MiB) in "
            f"{time.perf_counter() - start:.1f} s"
        )
        (www / "local.json").write_text(json.dumps(_item({k: f"{k}.tif" for k in BANDS})))
        off = (args.size - args.aoi) // 2
        aoi = [
            ORIGIN[0] + 10 * off,
            ORIGIN[1] - 10 * (off + args.aoi),
            ORIGIN[0] + 10 * (off + args.aoi),
            ORIGIN[1] - 10 * off,
        ]
        share = args.aoi**2 / args.size**2
        rows = []
        with RangeServer(www) as server:
            remote = _item({k: server.url(f"{k}.tif") for k in BANDS})
            (www / "http.json").write_text(json.dumps(remote))
            for name, item, box in [
                ("local, full scene", "local.json", None),
                ("HTTP, full scene", "http.json", None),
                (f"local, AOI {args.aoi}^2", "local.json", aoi),
                (f"HTTP, AOI {args.aoi}^2", "http.json", aoi),
            ]:
                server.reset_counts()
                work = root / name.replace(" ", "_").replace(",", "")
                seconds, rss = _ingest(work, www / item, box)
                rows.append((name, seconds, server.total_bytes(), server.total_requests(), rss))
        print(f"\n{'run':<22} {'seconds':>8} {'MiB sent':>9} {'requests':>9} {'peak MiB':>9}")
        for name, seconds, sent, requests, rss in rows:
            print(f"{name:<22} {seconds:>8.2f} {sent / 2**20:>9.1f} {requests:>9} {rss:>9.0f}")
        print(f"(files: {total / 2**20:.1f} MiB)")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import stages.ingest"], env=env, check=True)
        startup = time.perf_counter() - start
        local, http, _, aoi_http = rows
        print(f"\nHTTP / local, full scene: {http[1] / local[1]:.2f}x (target <= 1.5x)")
        print(f"AOI share of the pixels: {share:.2%}")
        print(
            f"AOI over HTTP: time {aoi_http[1] / http[1]:.2%} of the full scene "
            f"({aoi_http[1] / http[1] / share:.2f}x its share; target <= 2x), bytes "
            f"{aoi_http[2] / total:.2%} of the files ({aoi_http[2] / total / share:.2f}x its "
            "share; target <= 2x)"
        )
        net = (aoi_http[1] - startup) / (http[1] - startup)
        print(
            f"stage start-up (python -c 'import stages.ingest'): {startup:.2f} s; without it the "
            f"AOI takes {net:.2%} of the full scene's time ({net / share:.2f}x its share)"
        )


if __name__ == "__main__":
    main()
