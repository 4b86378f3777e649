"""The container smoke test's inside half: run the image's command, then ask the service.

Runs *inside* the built image (its own python, standard library only), with a pipeline checkout
on which ``dvc repro`` has run mounted at ``SATPIPE_REPO``. It starts the image's command on
127.0.0.1 and a free port (``UVICORN_HOST``/``UVICORN_PORT``: the network is the host's), waits
for ``/health/ready`` to answer 200, asks ``/infer`` for one tile and compares the answer with
that tile's record in ``data/predictions.json`` (prediction, score, model version), runs the
image's ``HEALTHCHECK`` command, and checks what the build put in the image: a non-root user,
and no data, git or venv of the project beside the code. Exit status 0 when all hold; 1 with one
line naming what did not.

Usage: ``python smoke_check.py '<image Cmd as JSON>' '<image Healthcheck.Test as JSON>'``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger("smoke")

READY_TIMEOUT = 120.0
# What .dockerignore keeps out of the build context; none of it may appear beside the code.
NOT_IN_IMAGE = ("data", ".dvc", ".git", ".venv", "runs", "tests", "models", "dvc.lock")


class SmokeError(Exception):
    """A check failed; the message says which and what was seen."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """GET ``url`` (POST ``body`` as JSON when given); the status and the decoded JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_ready(base: str, server: subprocess.Popen) -> float:
    """Seconds until ``/health/ready`` answers 200; fails if the server exits or times out."""
    start = time.monotonic()
    status, answer = 0, None
    while time.monotonic() - start < READY_TIMEOUT:
        if server.poll() is not None:
            raise SmokeError(f"the service exited with status {server.returncode} before ready")
        try:
            status, answer = request(f"{base}/health/ready")
        except OSError:  # not listening yet
            status, answer = 0, None
        if status == 200:
            return time.monotonic() - start
        time.sleep(0.2)
    raise SmokeError(f"/health/ready not 200 after {READY_TIMEOUT:.0f} s: {status} {answer}")


def check_infer(base: str, repo: Path) -> str:
    """``/infer`` of the first tile of ``data/predictions.json`` must answer what it records."""
    records = json.loads((repo / "data" / "predictions.json").read_text())["predictions"]
    if not records:
        raise SmokeError(f"{repo}/data/predictions.json holds no prediction")
    expected = min(records, key=lambda record: record["id"])
    status, answer = request(f"{base}/infer", {"tile_path": expected["path"]})
    if status != 200:
        raise SmokeError(f"/infer {expected['path']}: {status} {answer}")
    for key in ("prediction", "score", "model_version"):
        if answer[key] != expected[key]:
            raise SmokeError(
                f"/infer {expected['path']}: {key} {answer[key]!r}, "
                f"data/predictions.json has {expected[key]!r}"
            )
    return f"{expected['path']} -> {answer['prediction']} (score {answer['score']})"


def check_healthcheck(test: list[str], env: dict[str, str]) -> None:
    """Run the image's HEALTHCHECK (``["CMD", ...]`` or ``["CMD-SHELL", "..."]``): must exit 0."""
    if not test or test[0] not in ("CMD", "CMD-SHELL"):
        raise SmokeError(f"the image has no HEALTHCHECK command: {test!r}")
    cmd = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise SmokeError(f"HEALTHCHECK exited {done.returncode}: {done.stderr.strip()[-500:]}")


def check_contents() -> None:
    """The service runs as a non-root user, and only code sits in its working directory."""
    if os.getuid() == 0:
        raise SmokeError("the image runs as root")
    found = [name for name in NOT_IN_IMAGE if Path(name).exists()]
    if found:
        raise SmokeError(f"{Path.cwd()} holds {', '.join(found)}: check .dockerignore")


def stop(server: subprocess.Popen) -> None:
    """Stop uvicorn as docker stop would (SIGTERM), killing it if it does not exit."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=20)


def smoke(cmd: list[str], healthcheck: list[str]) -> None:
    """Start ``cmd`` (the image's CMD) on 127.0.0.1 and run every check against it."""
    check_contents()
    repo = Path(os.environ["SATPIPE_REPO"])
    port = free_port()
    env = dict(os.environ, UVICORN_HOST="127.0.0.1", UVICORN_PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    rev = os.environ.get("SATPIPE_REV") or "-"
    log.info("starting %s on %s (SATPIPE_REPO=%s, SATPIPE_REV=%s)", " ".join(cmd), base, repo, rev)
    server = subprocess.Popen(cmd, env=env)
    try:
        log.info("/health/ready 200 after %.1f s", wait_ready(base, server))
        log.info("/infer %s, as in data/predictions.json", check_infer(base, repo))
        check_healthcheck(healthcheck, env)
        log.info("HEALTHCHECK passed")
    finally:
        stop(server)


def main(argv: list[str]) -> int:
    """Entry point: ``argv`` = [image Cmd JSON, image Healthcheck.Test JSON]."""
    logging.basicConfig(level=logging.INFO, format="smoke: %(message)s", stream=sys.stderr)
    if len(argv) != 2:
        log.error("usage: smoke_check.py '<Cmd JSON>' '<Healthcheck.Test JSON>'")
        return 2
    try:
        smoke(json.loads(argv[0]), json.loads(argv[1]))
    except SmokeError as exc:
        log.error("FAILED: %s", exc)
        return 1
    log.info("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
