"""Downloads against a local HTTP server on 127.0.0.1: retries, checksum, atomic placement."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio

from satpipe.core.errors import ChecksumError, DownloadError, NotGeoTIFFError
from satpipe.core.params import IngestParams
from satpipe.scenes.download import download
from satpipe.scenes.ingest import ingest

# A route gets the handler and the 1-based number of this request to its path.
Route = Callable[[BaseHTTPRequestHandler, int], None]


@dataclass
class LocalServer:
    url: str
    routes: dict[str, Route] = field(default_factory=dict)
    hits: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def send(
    handler: BaseHTTPRequestHandler,
    body: bytes,
    status: int = 200,
    length: int | None = None,
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """An HTTP/1.0 server on 127.0.0.1 (ephemeral port), stopped after the test."""
    state = LocalServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.hits[self.path] += 1
                number = state.hits[self.path]
            route = state.routes.get(self.path)
            if route is None:
                send(self, b"not found", status=404)
            else:
                route(self, number)

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

    class QuietServer(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that timed out and hung up is expected in some tests

    httpd = QuietServer(("127.0.0.1", 0), Handler)
    host, port = httpd.server_address[:2]
    state.url = f"http://{host}:{port}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def scene_bytes(make_raster) -> bytes:
    return make_raster("served.tif", count=2, nodata=0).read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    directory = tmp_path / "downloads"
    directory.mkdir()
    return directory / "scene.tif"


def test_success(server: LocalServer, scene_bytes: bytes, dest: Path):
    server.routes["/scene.tif"] = lambda h, n: send(h, scene_bytes)
    download(f"{server.url}/scene.tif", dest, sha256=sha(scene_bytes), backoff=0.001)
    assert dest.read_bytes() == scene_bytes
    assert files_in(dest.parent) == ["scene.tif"]
    assert server.hits["/scene.tif"] == 1


def test_body_larger_than_one_chunk(server: LocalServer, dest: Path):
    body = bytes(range(256)) * 9000  # 2.3 MB: several 1 MiB chunks
    server.routes["/big"] = lambda h, n: send(h, body)
    download(f"{server.url}/big", dest, sha256=sha(body).upper(), backoff=0.001)
    assert dest.read_bytes() == body


def test_wrong_sha256_leaves_nothing(server: LocalServer, scene_bytes: bytes, dest: Path):
    server.routes["/scene.tif"] = lambda h, n: send(h, scene_bytes)
    url = f"{server.url}/scene.tif"
    with pytest.raises(ChecksumError) as info:
        download(url, dest, sha256="0" * 64, backoff=0.001)
    message = str(info.value)
    assert url in message and sha(scene_bytes) in message and "0" * 64 in message
    assert files_in(dest.parent) == [], "no file at dest and no temporary file left"
    assert server.hits["/scene.tif"] == 1, "a checksum mismatch is not retried"


def test_failed_download_keeps_the_previous_file(server: LocalServer, dest: Path):
    dest.write_bytes(b"previous")
    server.routes["/scene.tif"] = lambda h, n: send(h, b"tampered")
    with pytest.raises(ChecksumError):
        download(f"{server.url}/scene.tif", dest, sha256=sha(b"expected"), backoff=0.001)
    assert dest.read_bytes() == b"previous"
    assert files_in(dest.parent) == ["scene.tif"]


def test_404_fails_at_once(server: LocalServer, dest: Path):
    url = f"{server.url}/missing.tif"
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        download(url, dest, sha256="0" * 64, retries=3, backoff=0.001)
    assert url in str(info.value)
    assert server.hits["/missing.tif"] == 1
    assert files_in(dest.parent) == []


def test_503_twice_then_success(server: LocalServer, scene_bytes: bytes, dest: Path):
    def flaky(handler: BaseHTTPRequestHandler, number: int) -> None:
        if number <= 2:
            send(handler, b"busy", status=503)
        else:
            send(handler, scene_bytes)

    server.routes["/scene.tif"] = flaky
    start = time.monotonic()
    download(f"{server.url}/scene.tif", dest, sha256=sha(scene_bytes), retries=3, backoff=0.001)
    assert time.monotonic() - start < 5
    assert dest.read_bytes() == scene_bytes
    assert server.hits["/scene.tif"] == 3
    assert files_in(dest.parent) == ["scene.tif"]


def test_503_every_time_gives_up(server: LocalServer, dest: Path):
    server.routes["/scene.tif"] = lambda h, n: send(h, b"busy", status=503)
    with pytest.raises(DownloadError, match=r"after 3 attempts.*503") as info:
        download(f"{server.url}/scene.tif", dest, sha256="0" * 64, retries=2, backoff=0.001)
    assert f"{server.url}/scene.tif" in str(info.value)
    assert server.hits["/scene.tif"] == 3
    assert files_in(dest.parent) == []


def test_truncated_body_is_retried_then_fails(server: LocalServer, scene_bytes: bytes, dest: Path):
    # Content-Length promises more than is sent; the HTTP/1.0 server then closes the connection.
    server.routes["/scene.tif"] = lambda h, n: send(h, scene_bytes[:1000], length=len(scene_bytes))
    url = f"{server.url}/scene.tif"
    with pytest.raises(DownloadError, match="after 3 attempts") as info:
        download(url, dest, sha256=sha(scene_bytes), retries=2, backoff=0.001)
    message = str(info.value)
    assert f"connection closed after 1000 of {len(scene_bytes)} bytes" in message
    assert message.count(url) == 1
    assert server.hits["/scene.tif"] == 3
    assert files_in(dest.parent) == []


def test_truncated_once_then_complete(server: LocalServer, scene_bytes: bytes, dest: Path):
    def cut_once(handler: BaseHTTPRequestHandler, number: int) -> None:
        if number == 1:
            send(handler, scene_bytes[:500], length=len(scene_bytes))
        else:
            send(handler, scene_bytes)

    server.routes["/scene.tif"] = cut_once
    download(f"{server.url}/scene.tif", dest, sha256=sha(scene_bytes), retries=1, backoff=0.001)
    assert dest.read_bytes() == scene_bytes
    assert server.hits["/scene.tif"] == 2


def test_timeout_is_retried(server: LocalServer, dest: Path):
    def slow(handler: BaseHTTPRequestHandler, number: int) -> None:
        time.sleep(0.4)
        send(handler, b"late")

    server.routes["/slow"] = slow
    with pytest.raises(DownloadError, match="after 2 attempts"):
        download(f"{server.url}/slow", dest, sha256=sha(b"late"), retries=1, timeout=0.1, backoff=0)
    assert server.hits["/slow"] == 2
    assert files_in(dest.parent) == []


def test_connection_refused(dest: Path):
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match="after 2 attempts"):
        download(f"http://127.0.0.1:{port}/x.tif", dest, sha256="0" * 64, retries=1, backoff=0)
    assert files_in(dest.parent) == []


# --- ingest with source http --------------------------------------------------------------------


def test_ingest_http_end_to_end(server: LocalServer, scene_bytes: bytes, tmp_path: Path):
    server.routes["/scenes/served.tif"] = lambda h, n: send(h, scene_bytes)
    url = f"{server.url}/scenes/served.tif"
    out = tmp_path / "data"
    params = IngestParams(source="http", url=url, fetch="download", sha256=sha(scene_bytes))
    meta = ingest(params, out / "scene.tif", out / "scene.json", tmp_path).to_json()
    assert (out / "scene.tif").read_bytes() == scene_bytes
    written = json.loads((out / "scene.json").read_text())
    assert written["source"] == {"kind": "http", "url": url, "fetch": "download"}
    assert written["sha256"] == meta["sha256"] == sha(scene_bytes)
    assert (written["width"], written["height"], written["count"]) == (97, 83, 2)
    assert files_in(out) == ["scene.json", "scene.preview.tif", "scene.tif"]


def test_ingest_http_labels_are_downloaded_and_verified(
    server: LocalServer, scene_bytes: bytes, tmp_path: Path, make_raster
):
    codes = np.where(np.arange(97) < 50, 8, 4)[None, :].repeat(83, axis=0)
    label_bytes = make_raster(name="served_labels.tif", dtype="uint8", data=codes).read_bytes()
    server.routes["/scene.tif"] = lambda h, n: send(h, scene_bytes)
    server.routes["/labels.tif"] = lambda h, n: send(h, label_bytes)
    labels = {"url": f"{server.url}/labels.tif", "classes": {"bright": [8], "dark": [4]}}
    params = IngestParams(
        source="http",
        url=f"{server.url}/scene.tif",
        fetch="download",
        sha256=sha(scene_bytes),
        labels={**labels, "sha256": sha(label_bytes)},
    )
    out = tmp_path / "data"
    meta = ingest(params, out / "scene.tif", out / "scene.json", tmp_path).to_json()
    assert meta["labels"]["source"] == {
        "kind": "http",
        "url": labels["url"],
        "sha256": sha(label_bytes),
    }
    assert meta["labels"]["labelled_fraction"] == 1.0
    with rasterio.open(out / "scene.labels.tif") as lab:
        assert np.array_equal(lab.read(1), codes)
    assert files_in(out) == ["scene.json", "scene.labels.tif", "scene.preview.tif", "scene.tif"]
    bad = IngestParams(
        source="http",
        url=f"{server.url}/scene.tif",
        fetch="download",
        sha256=sha(scene_bytes),
        labels={**labels, "sha256": "0" * 64},
    )
    with pytest.raises(ChecksumError, match=r"labels\.tif"):
        ingest(bad, tmp_path / "bad/scene.tif", tmp_path / "bad/scene.json", tmp_path)
    assert files_in(tmp_path / "bad") == []


def test_ingest_http_wrong_sha256_leaves_nothing(
    server: LocalServer, scene_bytes: bytes, tmp_path: Path
):
    server.routes["/served.tif"] = lambda h, n: send(h, scene_bytes)
    out = tmp_path / "data"
    params = IngestParams(
        source="http", url=f"{server.url}/served.tif", fetch="download", sha256="1" * 64
    )
    with pytest.raises(ChecksumError, match=r"ingest\.sha256"):
        ingest(params, out / "scene.tif", out / "scene.json", tmp_path)
    assert files_in(out) == []


def test_ingest_http_verified_but_not_a_geotiff(server: LocalServer, tmp_path: Path):
    body = b"<html>a login page</html>\n"
    server.routes["/page.tif"] = lambda h, n: send(h, body)
    url = f"{server.url}/page.tif"
    out = tmp_path / "data"
    params = IngestParams(source="http", url=url, fetch="download", sha256=sha(body))
    with pytest.raises(NotGeoTIFFError) as info:
        ingest(params, out / "scene.tif", out / "scene.json", tmp_path)
    assert str(info.value).startswith(f"{url}: ")
    assert files_in(out) == []


def test_ingest_http_in_place_names_a_server_without_range_support(
    server: LocalServer, scene_bytes: bytes, tmp_path: Path
):
    """This server ignores Range: the default (read in place) says so and names the fix."""
    server.routes["/served.tif"] = lambda h, n: send(h, scene_bytes)
    url = f"{server.url}/served.tif"
    out = tmp_path / "data"
    with pytest.raises(DownloadError) as info:
        ingest(
            IngestParams(source="http", url=url), out / "scene.tif", out / "scene.json", tmp_path
        )
    message = str(info.value)
    assert message.startswith(f"{url}: the server does not support HTTP range requests")
    assert message.endswith("set ingest.fetch: download to fetch it whole")
    assert files_in(out) == []
