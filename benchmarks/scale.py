"""Benchmark DVC and the service against the number of tiles: is the cost per tile flat?

Usage::

    python benchmarks/scale.py                       # 1,000, 10,000 and 100,000 tiles
    python benchmarks/scale.py --tiles 1000 10000    # fewer points

For each point, a fresh ``git clone`` of this repository tiles one synthetic scene of about
``N`` tiles of 16^2 pixels (``tile.size`` 16, so tiles are many and small), and times:
``dvc repro`` end to end; a no-op ``dvc status``; ``dvc push`` to a local-directory remote; a
``dvc pull`` of everything into a second fresh clone; and the REST service's start-up (from
launching uvicorn on the repository to ``/health/ready`` answering 200) with its memory once
ready. Prints each figure and its cost per tile.

Targets (issue 11): per-tile cost flat from 1,000 to 100,000 tiles (at most 1.5x growth); no-op
``dvc status`` under 10 s at 100,000 tiles.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TILE = 16

from benchmarks.repro import timed  # noqa: E402
from tests.helpers import tool_env  # noqa: E402


def _clone(dest: Path) -> Path:
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True, env=tool_env())
    return dest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _service_startup(repo: Path) -> tuple[float, float]:
    """Seconds from launching uvicorn to /health/ready = 200, and its RSS (MiB) then."""
    port = _free_port()
    env = {**tool_env(), "SATPIPE_REPO": str(repo)}
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "serve.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the service exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/health/ready", timeout=5
                ) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return seconds, rss


def point(tiles: int, work: Path) -> dict[str, float]:
    """Measure one point of about ``tiles`` tiles."""
    side = TILE * math.ceil(math.sqrt(tiles))
    repo = _clone(work / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ingest"].update({"width": side, "height": side})
    params["tile"].update({"size": TILE, "max_nodata_fraction": 1.0})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run(["git", "commit", "-qam", "scale"], cwd=repo, check=True, env=tool_env())
    remote = work / "remote"
    subprocess.run([dvc, "remote", "add", "-d", "local", str(remote)], cwd=repo, env=tool_env())
    out = {"repro": timed([dvc, "repro", "--quiet"], repo)}
    out["tiles"] = json.loads((repo / "data/tile_index.json").read_text())["tile_count"]
    out["status"] = timed([dvc, "status", "--quiet"], repo)
    out["push"] = timed([dvc, "push", "--quiet"], repo)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=tool_env())
    subprocess.run(["git", "commit", "-qm", "lock"], cwd=repo, check=True, env=tool_env())
    other = work / "other"
    subprocess.run(["git", "clone", "--quiet", str(repo), str(other)], check=True, env=tool_env())
    out["pull"] = timed([dvc, "pull", "--quiet"], other)
    out["service start"], out["service MiB"] = _service_startup(repo)
    return out


def main() -> None:
    """Run every point and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, nargs="+", default=[1000, 10000, 100000])
    args = p.parse_args()
    rows = []
    for n in args.tiles:
        with tempfile.TemporaryDirectory(prefix=f"scale-{n}-") as tmp:
            rows.append(point(n, Path(tmp)))
            print(f"done {n}: {rows[-1]}", flush=True)
    keys = ["repro", "status", "push", "pull", "service start"]
    print(f"\n{'tiles':>8} " + " ".join(f"{k + ' s':>16}" for k in keys) + f" {'service MiB':>12}")
    for row in rows:
        cells = " ".join(f"{row[k]:>16.2f}" for k in keys)
        print(f"{row['tiles']:>8.0f} {cells} {row['service MiB']:>12.0f}")
    print("\nper tile, ms:")
    for row in rows:
        cells = " ".join(f"{1000 * row[k] / row['tiles']:>16.3f}" for k in keys)
        print(f"{row['tiles']:>8.0f} {cells}")
    first, last = rows[0], rows[-1]
    for k in keys:
        growth = (last[k] / last["tiles"]) / (first[k] / first["tiles"])
        print(f"{k}: per-tile cost x{growth:.2f} from {first['tiles']:.0f} to {last['tiles']:.0f}")
    print(f"no-op dvc status at {last['tiles']:.0f} tiles: {last['status']:.2f} s (target < 10 s)")


if __name__ == "__main__":
    shutil.which("git") or sys.exit("git is needed")
    main()
