"""Model updates without downtime: a new pin is loaded in the background and swapped in.

The unit-level tests call :meth:`Service.check_pin` themselves (``reload_interval=0`` turns the
watcher thread off) so each step is deterministic; the last test runs real uvicorn with its
watcher and drives ``/infer`` from four clients while the pin changes twice.
"""

# Fixtures are imported from tests.serve_fixtures; pytest injects them as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from satpipe.core import lockfile
from serve.service import Service
from tests.serve_fixtures import (  # noqa: F401
    first_tile,
    make_client,
    pipeline_repo,
    repo_copy,
    run,
    uvicorn_server,
)

pytestmark = pytest.mark.slow


def _md5(lock_text: str) -> str:
    return lockfile.pin(lockfile.parse_lock(lock_text)).model.md5


def _service(client: TestClient) -> Service:
    return client.app.state.service  # type: ignore[attr-defined]


def _metric(client: TestClient, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", client.get("/metrics").text, re.MULTILINE)
    assert found, name
    return float(found.group(1))


def _write_like_dvc(path: Path, text: str, pause: float = 0.0) -> None:
    """Rewrite ``path`` in place, in two halves, as DVC rewrites dvc.lock (not atomically)."""
    with path.open("w") as f:
        f.write(text[: len(text) // 2])
        f.flush()
        time.sleep(pause)
        f.write(text[len(text) // 2 :])


def test_a_new_pin_is_loaded_and_swapped_in_without_a_restart(
    repo_copy: Path, make_client: Callable[..., TestClient]
) -> None:
    served = make_client(repo_copy, reload_interval=0)
    body = {"tile_path": first_tile(repo_copy)}
    lock_path = repo_copy / "dvc.lock"
    current = lock_path.read_text()
    old = run(["git", "show", "v1:dvc.lock"], repo_copy)
    assert served.post("/infer", json=body).json()["model_md5"] == _md5(current)
    before = served.post("/infer", json=body).json()

    lock_path.write_text(old)
    _service(served).check_pin()
    got = served.post("/infer", json=body).json()
    assert got["model_md5"] == _md5(old) != _md5(current)
    assert got["model_version"] != before["model_version"]
    assert served.get("/model").json()["training_params"]["fraction"] == 0.5
    assert _metric(served, "satpipe_model_swaps_total") == 1.0
    assert f'model_md5="{_md5(old)}"' in served.get("/metrics").text
    assert f'model_md5="{_md5(current)}"' not in served.get("/metrics").text

    lock_path.write_text(current)
    _service(served).check_pin()
    assert served.post("/infer", json=body).json() == before
    assert _metric(served, "satpipe_model_swaps_total") == 2.0


def test_a_pin_that_cannot_be_loaded_is_not_served_and_recovers(
    repo_copy: Path, make_client: Callable[..., TestClient]
) -> None:
    served = make_client(repo_copy, reload_interval=0)
    body = {"tile_path": first_tile(repo_copy)}
    lock_path = repo_copy / "dvc.lock"
    original = lock_path.read_text()
    lock_path.write_text(original.replace(_md5(original), "a" * 32))
    _service(served).check_pin()
    for got in (served.post("/infer", json=body), served.get("/health/ready")):
        assert got.status_code == 503
        detail = got.json()["detail"]
        assert "dvc.lock now pins data/model.json md5 aaaaaaaa" in detail and "\n" not in detail
    assert _metric(served, "satpipe_model_ready") == 0.0
    assert _metric(served, "satpipe_pin_load_failures_total") == 1.0
    assert "satpipe_model_info{" not in served.get("/metrics").text
    _service(served).check_pin()  # retried, still failing: counted once
    assert _metric(served, "satpipe_pin_load_failures_total") == 1.0

    lock_path.write_text(original + "\n")  # the old pin again: served at once, no reload
    _service(served).check_pin()
    assert served.post("/infer", json=body).json()["model_md5"] == _md5(original)
    assert _metric(served, "satpipe_model_ready") == 1.0
    assert _metric(served, "satpipe_model_swaps_total") == 0.0


def test_a_lock_caught_mid_write_is_read_again_not_taken_for_a_pin(
    repo_copy: Path, make_client: Callable[..., TestClient]
) -> None:
    served = make_client(repo_copy, reload_interval=0, reload_settle=0.3)
    body = {"tile_path": first_tile(repo_copy)}
    lock_path = repo_copy / "dvc.lock"
    original = lock_path.read_text()
    start = time.monotonic()
    lock_path.write_text(original[:100])  # DVC is halfway through rewriting it
    _service(served).check_pin()
    if time.monotonic() - start < 0.3:  # within the settle time: still serving, as before
        assert served.post("/infer", json=body).json()["model_md5"] == _md5(original)
    time.sleep(0.35)
    _service(served).check_pin()  # still unreadable after the settle time: reported
    got = served.post("/infer", json=body)
    assert got.status_code == 503
    assert "dvc.lock: no stage 'train'" in got.json()["detail"]

    lock_path.write_text(original)
    _service(served).check_pin()
    assert served.post("/infer", json=body).status_code == 200


def test_infer_under_load_while_the_pin_changes_twice(repo_copy: Path, tmp_path: Path) -> None:
    """Four clients, two pin changes written as DVC writes them: no failure, md5s in order."""
    lock_path = repo_copy / "dvc.lock"
    second = lock_path.read_text()
    first = run(["git", "show", "v1:dvc.lock"], repo_copy)
    order = [_md5(first), _md5(second), _md5(first)]
    lock_path.write_text(first)
    body = {"tile_path": first_tile(repo_copy)}
    stop = threading.Event()
    answers: list[list[tuple[int, str | None]]] = [[] for _ in range(4)]

    def client(k: int, base: str) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            while not stop.is_set():
                got = http.post("/infer", json=body)
                md5 = got.json().get("model_md5") if got.status_code == 200 else got.text
                answers[k].append((got.status_code, md5))

    def wait_for(http: httpx.Client, md5: str) -> None:
        deadline = time.monotonic() + 30
        while http.get("/health/ready").json().get("model_md5") != md5:
            assert time.monotonic() < deadline, f"never swapped to {md5}"
            time.sleep(0.02)

    with uvicorn_server(repo_copy, tmp_path / "server.log", reload_interval="0.05") as base:
        threads = [threading.Thread(target=client, args=(k, base)) for k in range(4)]
        for t in threads:
            t.start()
        with httpx.Client(base_url=base, timeout=30) as http:
            wait_for(http, order[0])
            time.sleep(0.5)
            for text, md5 in ((second, order[1]), (first, order[2])):
                _write_like_dvc(lock_path, text, pause=0.2)
                wait_for(http, md5)
                time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join()
            metrics = http.get("/metrics").text
    assert "satpipe_model_swaps_total 2.0" in metrics
    assert "satpipe_pin_load_failures_total 0.0" in metrics
    total = sum(len(a) for a in answers)
    assert total > 100
    failed = [a for client_answers in answers for a in client_answers if a[0] != 200]
    assert failed == []
    for client_answers in answers:
        # Each client saw the pins in the order they were pinned: first+ second+ first+.
        phase = 0
        for _, md5 in client_answers:
            while md5 != order[phase]:
                phase += 1
                assert phase < len(order), f"{md5} out of order in {client_answers}"
        assert phase == 2, "a client did not see every pin"


def test_a_model_that_arrives_later_is_served_without_a_restart(
    repo_copy: Path, make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As after a `dvc pull`: the pinned model appears; the lock itself does not change."""
    md5 = _md5((repo_copy / "dvc.lock").read_text())
    obj = lockfile.cache_object_path(repo_copy / ".dvc" / "cache", md5)
    kept = obj.read_bytes()
    obj.unlink()
    (repo_copy / "data" / "model.json").unlink()
    served = make_client(repo_copy, reload_interval=0)
    assert served.get("/health/ready").status_code == 503
    monkeypatch.setattr("serve.service.RETRY_SECONDS", 0.0)
    obj.write_bytes(kept)
    _service(served).check_pin()
    ready = served.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["model_md5"] == md5
