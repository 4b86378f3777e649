"""Load benchmark of the REST service: one uvicorn process, N keep-alive connections.

Starts ``uvicorn serve.app:create_app --factory`` on 127.0.0.1 (one process, a free port),
waits until ``/health/ready``, then drives, for a fixed duration each:

1. ``POST /infer`` by path, cycling over every tile of the tile index;
2. ``POST /infer/upload`` with those same tiles as multipart GeoTIFF uploads.

The load generator runs in a separate process (``--client``) so it does not steal the server's
interpreter; it speaks raw HTTP/1.1 over asyncio streams, which costs far less CPU per request
than an HTTP library. Prints requests/s, latency percentiles, status and error counts, and the CPU
the server used. Every loop is bounded by its duration; the server is stopped at the end.

Usage: ``python benchmarks/load_serve.py [--repo .] [--duration 10] [--connections 4]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BOUNDARY = "satpipe-load-boundary"


def _infer_request(tile: str) -> bytes:
    body = json.dumps({"tile_path": tile}).encode()
    head = (
        "POST /infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _upload_request(name: str, data: bytes) -> bytes:
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: image/tiff\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    head = (
        "POST /infer/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(
    port: int, requests: list[bytes], offset: int, deadline: float, out: dict[str, Any]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while time.perf_counter() < deadline:
            request = requests[i % len(requests)]
            i += 1
            start = time.perf_counter()
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                out["errors"][type(exc).__name__] = out["errors"].get(type(exc).__name__, 0) + 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            out["latencies"].append(time.perf_counter() - start)
            out["statuses"][status] = out["statuses"].get(status, 0) + 1
            if status != 200 or b'"prediction"' not in body:
                out["errors"][f"status {status}"] = out["errors"].get(f"status {status}", 0) + 1
    finally:
        writer.close()


async def _drive(port: int, requests: list[bytes], connections: int, duration: float) -> dict:
    out: dict[str, Any] = {"latencies": [], "statuses": {}, "errors": {}}
    start = time.perf_counter()
    deadline = start + duration
    tasks = [
        _connection(port, requests, k * len(requests) // connections, deadline, out)
        for k in range(connections)
    ]
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=duration + 30)
    out["elapsed"] = time.perf_counter() - start
    return out


def client_main(args: argparse.Namespace) -> None:
    """The load generator (run in its own process): print one JSON result line."""
    index = json.loads((Path(args.repo) / args.tile_index).read_text())
    tiles = [t["file"] for t in index["tiles"]]
    if args.client == "infer":
        requests = [_infer_request(t) for t in tiles]
    else:
        sys.path.insert(0, str(ROOT))
        from satpipe.tiles.packs import read_member

        tiles_dir = Path(args.repo) / args.tiles_dir
        requests = [
            _upload_request(
                t["file"], read_member(tiles_dir / t["pack"], t["offset"], t["length"])[0]
            )
            for t in index["tiles"]
        ]
    try:  # uvloop, as the server uses: the client shares the cores, so it should cost little
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    warm = run(_drive(args.port, requests, args.connections, args.warmup))
    cpu = time.process_time()
    out = run(_drive(args.port, requests, args.connections, args.duration))
    out["client_cores"] = (time.process_time() - cpu) / out["elapsed"]
    out["warmup_requests"] = len(warm["latencies"])
    out["body_bytes"] = statistics.mean(len(r) for r in requests)
    print(json.dumps(out))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_ready(port: int, server: subprocess.Popen, timeout: float = 120.0) -> bool:
    """True once /health/ready answers 200; False if the server exited (port taken)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as r:
                if r.status == 200:
                    return True
        except urllib.error.HTTPError as exc:
            server.kill()
            sys.exit(f"error: the service is not ready: {exc.read().decode()}")
        except OSError:
            time.sleep(0.2)
    server.kill()
    sys.exit(f"error: the service was not ready within {timeout:.0f}s")


def _report(name: str, result: dict, cores: float) -> None:
    lat = sorted(result["latencies"])
    n = len(lat)
    if n == 0:
        print(f"{name}: no completed request; errors {result['errors']}")
        return

    def pct(p: float) -> float:
        return lat[min(n - 1, round(p / 100 * (n - 1)))] * 1e3

    rate = n / result["elapsed"]
    print(
        f"{name}: {n} requests in {result['elapsed']:.1f}s = {rate:.0f} req/s | latency ms "
        f"p50 {pct(50):.2f} p95 {pct(95):.2f} p99 {pct(99):.2f} max {lat[-1] * 1e3:.2f} | "
        f"statuses {result['statuses']} | errors {sum(result['errors'].values())} "
        f"{result['errors'] or ''} | CPU: server {cores:.2f} cores (incl. client start-up), "
        f"client {result['client_cores']:.2f} cores | "
        f"body {result['body_bytes'] / 1024:.0f} KiB"
    )


def _run_client(args: argparse.Namespace, kind: str, port: int) -> dict:
    cmd = [sys.executable, __file__, "--client", kind, "--port", str(port)]
    for opt in ("repo", "tile_index", "tiles_dir", "connections", "duration", "warmup"):
        cmd += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    timeout = args.duration + args.warmup + 120
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        sys.exit(f"error: the load client failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _calibrate(args: argparse.Namespace) -> float:
    """Milliseconds per tile of ``predict_file`` in this process, one thread (best of 3).

    The machine's speed varies (a shared VM); this floor, measured just before the load, says
    what one core can do at that moment, so requests/s can be read against it.
    """
    sys.path.insert(0, str(ROOT))
    from satpipe.core.records import TileEntry
    from satpipe.inference.predict import TileSource, predict_file
    from satpipe.models import model as model_lib

    repo = Path(args.repo)
    index = json.loads((repo / args.tile_index).read_text())
    model = model_lib.load(repo / "data" / "model.json", repo)
    paths = [
        (TileSource.of_entry(repo / args.tiles_dir, TileEntry.from_json(t)), t["sha256"])
        for t in index["tiles"]
    ]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for path, sha in paths:
            predict_file(path, model, sha)
        best = min(best, (time.perf_counter() - start) / len(paths))
    return best * 1e3


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    # A port picked then released (uvicorn's --fd would treat a TCP socket as a Unix one and
    # leave Nagle's algorithm on); retried in the unlikely case another process takes it.
    env = dict(os.environ, SATPIPE_REPO=str(Path(args.repo).resolve()))
    env.update(item.split("=", 1) for item in args.server_env)
    for _ in range(3):
        port = _free_port()
        cmd = [sys.executable, "-m", "uvicorn", "serve.app:create_app", "--factory"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        if not args.access_log:
            cmd.append("--no-access-log")
        server = subprocess.Popen(cmd, cwd=ROOT, env=env)
        if _wait_ready(port, server):
            return server, port
    sys.exit("error: the server could not start (see its log above)")


def main(args: argparse.Namespace) -> None:
    """Start the server, run both scenarios, stop the server."""
    floor = _calibrate(args)
    print(
        f"in-process predict_file (with the sha256 check): {floor:.2f} ms/tile, so one core "
        f"tops out near {1e3 / floor:.0f} tiles/s before any HTTP work"
    )
    server, port = _start_server(args)
    try:
        print(
            f"server pid {server.pid} on 127.0.0.1:{port}, {args.connections} connections, "
            f"{args.duration:.0f}s per scenario after {args.warmup:.0f}s warm-up, "
            f"{os.cpu_count()} CPUs, server env {args.server_env or 'default'}"
        )
        for kind in ("infer", "upload"):
            if kind == "upload" and args.no_upload:
                continue
            before, start = _cpu_seconds(server.pid), time.perf_counter()
            result = _run_client(args, kind, port)
            cores = (_cpu_seconds(server.pid) - before) / (time.perf_counter() - start)
            _report(f"/infer{'/upload' if kind == 'upload' else ''}", result, cores)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", default=".", help="DVC project whose pinned model is served")
    p.add_argument("--tile-index", default="data/tile_index.json", help="relative to --repo")
    p.add_argument("--tiles-dir", default="data/tiles", help="relative to --repo")
    p.add_argument("--connections", type=int, default=4, help="concurrent connections")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    p.add_argument("--no-upload", action="store_true", help="skip the upload scenario")
    p.add_argument("--access-log", action="store_true", help="keep uvicorn's access log on")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the server, e.g. a GDAL option (repeatable)",
    )
    p.add_argument("--client", choices=("infer", "upload"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return p.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.client:
        client_main(arguments)
    else:
        main(arguments)
