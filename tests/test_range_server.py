"""The test-support range server and the STAC stand-in COGs behave as later tests assume."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from email.parser import BytesParser
from email.utils import formatdate
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from tests.range_server import RangeServer, parse_range, range_server
from tests.stac_standins import (
    EARTH_SEARCH_ITEM,
    PLANETARY_COMPUTER_ITEM,
    SCL_CODES,
    asset_grid,
    asset_seed,
    load_item,
    stac_item_path,
    standin_item,
    value_at,
    window_bounds,
    write_standin,
)

# What any reader of COGs over HTTP sets (no directory listing, no sidecar probing).
VSICURL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif",
}
DATA = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable mod 256
UTM_10M = Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 2300040.0)  # the 28QCH grid, 10 m


@pytest.fixture
def served(tmp_path: Path) -> Iterator[RangeServer]:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "data.bin").write_bytes(DATA)
    (root / "sub" / "other.bin").write_bytes(b"other file\n")
    with RangeServer(root) as server:
        yield server


def fetch(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, timeout: float = 5
) -> tuple[int, http.client.HTTPMessage, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.headers, response.read()


def unique_dir(root: Path) -> Path:
    """A directory with a name never served before in this process.

    GDAL caches /vsicurl/ sizes, headers and blocks per URL for the life of the process (a
    second open of the same URL sends no request at all), and an ephemeral port can come
    back, so GDAL byte counts must use URLs that are new to the process.
    """
    return root / uuid.uuid4().hex


# -- HTTP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=10-19", 10, 19),
        ("bytes=10000-", 10000, 10239),
        ("bytes=-100", 10140, 10239),
        ("bytes=10200-99999", 10200, 10239),  # clamped to the end of the file
        ("bytes=-99999", 0, 10239),
    ],
)
def test_range_get_returns_exactly_those_bytes(
    served: RangeServer, header: str, first: int, last: int
) -> None:
    status, headers, body = fetch(served.url("data.bin"), headers={"Range": header})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {first}-{last}/{len(DATA)}"
    assert body == DATA[first : last + 1]
    assert int(headers["Content-Length"]) == len(body)
    assert headers["Accept-Ranges"] == "bytes"
    assert served.bytes_sent("data.bin") == len(body) == served.total_bytes()
    assert served.requests("data.bin") == 1


def test_whole_file_without_range_and_counters(served: RangeServer) -> None:
    status, headers, body = fetch(served.url("data.bin"))
    assert (status, body) == (200, DATA)
    assert "Content-Range" not in headers
    assert headers["Accept-Ranges"] == "bytes"
    fetch(served.url("/sub/other.bin"), headers={"Range": "bytes=0-4"})
    assert served.bytes_sent("data.bin") == len(DATA)
    assert served.bytes_sent("sub/other.bin") == served.bytes_sent("/sub/other.bin") == 5
    assert served.total_bytes() == len(DATA) + 5
    assert served.requests("sub/other.bin") == 1
    served.reset_counts()
    assert served.total_bytes() == served.requests("data.bin") == 0


def test_multi_range_is_multipart_byteranges(served: RangeServer) -> None:
    status, headers, body = fetch(served.url("data.bin"), headers={"Range": "bytes=0-9,100-199"})
    assert status == 206
    assert headers.get_content_type() == "multipart/byteranges"
    assert len(body) == int(headers["Content-Length"]) == served.bytes_sent("data.bin")
    message = BytesParser().parsebytes(
        f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body
    )
    parts = [(p["Content-Range"], p.get_payload(decode=True)) for p in message.get_payload()]
    assert parts == [
        (f"bytes 0-9/{len(DATA)}", DATA[0:10]),
        (f"bytes 100-199/{len(DATA)}", DATA[100:200]),
    ]


def test_unsatisfiable_range_is_416(served: RangeServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        fetch(served.url("data.bin"), headers={"Range": f"bytes={len(DATA)}-"})
    assert info.value.code == 416
    assert info.value.headers["Content-Range"] == f"bytes */{len(DATA)}"


@pytest.mark.parametrize("header", ["bytes=20-10", "items=0-9", "bytes=a-b", "bytes=-"])
def test_invalid_range_header_is_ignored(served: RangeServer, header: str) -> None:
    status, _, body = fetch(served.url("data.bin"), headers={"Range": header})
    assert (status, body) == (200, DATA)


def test_parse_range() -> None:
    assert parse_range("bytes=0-0,-1", 10) == [(0, 0), (9, 9)]
    assert parse_range("bytes=5-,20-30", 10) == [(5, 9)]  # the unsatisfiable one is dropped
    assert parse_range("bytes=20-30", 10) == []
    assert parse_range("bytes=-0", 10) == []
    assert parse_range("bytes=0-1", 0) == []


def test_head_sends_validators_and_no_body(served: RangeServer) -> None:
    path = served.root / "data.bin"
    status, headers, body = fetch(served.url("data.bin"), method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) == len(DATA)
    assert headers["ETag"] == f'"{hashlib.sha256(DATA).hexdigest()}"'
    assert headers["Last-Modified"] == formatdate(path.stat().st_mtime, usegmt=True)
    assert headers["Accept-Ranges"] == "bytes"
    assert served.requests("data.bin") == 1
    assert served.bytes_sent("data.bin") == 0

    status, headers, _ = fetch(
        served.url("data.bin"), method="HEAD", headers={"Range": "bytes=0-9"}
    )
    assert (status, headers["Content-Length"]) == (206, "10")
    assert served.bytes_sent("data.bin") == 0


def test_etag_follows_the_file_content(served: RangeServer) -> None:
    first = fetch(served.url("data.bin"), method="HEAD")[1]["ETag"]
    assert fetch(served.url("data.bin"), method="HEAD")[1]["ETag"] == first
    (served.root / "data.bin").write_bytes(DATA[::-1])
    assert fetch(served.url("data.bin"), method="HEAD")[1]["ETag"] != first


def test_missing_and_outside_paths_are_404(served: RangeServer) -> None:
    (served.root.parent / "secret.bin").write_bytes(b"outside the root")
    for path in ("missing.bin", "sub", ""):
        with pytest.raises(urllib.error.HTTPError) as info:
            fetch(served.url(path))
        assert info.value.code == 404
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=5)
    try:  # a raw request line, not normalised by any client
        connection.request("GET", "/../secret.bin")
        assert connection.getresponse().status == 404
    finally:
        connection.close()


# -- behaviours ---------------------------------------------------------------------------------


def test_no_range_answers_200_with_the_whole_file(served: RangeServer) -> None:
    served.set("data.bin", "no_range")
    status, headers, body = fetch(served.url("data.bin"), headers={"Range": "bytes=0-9"})
    assert (status, body) == (200, DATA)
    assert "Accept-Ranges" not in headers and "Content-Range" not in headers
    assert served.bytes_sent("data.bin") == len(DATA)
    status, headers, _ = fetch(served.url("data.bin"), method="HEAD")
    assert "Accept-Ranges" not in headers
    served.clear("data.bin")
    assert fetch(served.url("data.bin"), headers={"Range": "bytes=0-9"})[0] == 206


@pytest.mark.parametrize("code", [404, 500, 503])
def test_status(served: RangeServer, code: int) -> None:
    served.set("data.bin", "status", code=code)
    with pytest.raises(urllib.error.HTTPError) as info:
        fetch(served.url("data.bin"), headers={"Range": "bytes=0-9"})
    assert info.value.code == code
    assert str(code).encode() in info.value.read()
    assert served.requests("data.bin") == 1


def test_redirect_loop_fails_in_urllib(served: RangeServer) -> None:
    served.set("data.bin", "redirect_loop")
    with pytest.raises(urllib.error.HTTPError, match=r"redirect error.*infinite loop") as info:
        fetch(served.url("data.bin"))
    assert info.value.code == 302
    assert served.requests("data.bin") > 1
    assert served.bytes_sent("data.bin") == 0


def test_two_redirects_pointing_at_each_other_loop(served: RangeServer) -> None:
    served.set("a.bin", "redirect", to="b.bin")
    served.set("b.bin", "redirect", to="a.bin")
    with pytest.raises(urllib.error.HTTPError, match="infinite loop"):
        fetch(served.url("a.bin"))


def test_redirect_is_followed(served: RangeServer) -> None:
    served.set("old/name.bin", "redirect", to="sub/other.bin")
    status, _, body = fetch(served.url("old/name.bin"), headers={"Range": "bytes=0-4"})
    assert (status, body) == (206, b"other")
    assert served.requests("old/name.bin") == served.requests("sub/other.bin") == 1


def test_set_checks_modes_and_options(served: RangeServer) -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        served.set("data.bin", "flaky")
    with pytest.raises(ValueError, match="needs"):
        served.set("data.bin", "slow")
    with pytest.raises(ValueError, match="takes"):
        served.set("data.bin", "no_range", delay=1)


def test_slow_times_out_a_client_and_shutdown_is_prompt(tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(DATA)
    server = RangeServer(tmp_path)
    try:
        server.set("data.bin", "slow", delay=30)
        start = time.monotonic()
        with pytest.raises((TimeoutError, urllib.error.URLError)) as info:
            fetch(server.url("data.bin"), timeout=0.2)
        if isinstance(info.value, urllib.error.URLError):
            assert isinstance(info.value.reason, TimeoutError)
        assert time.monotonic() - start < 2
        # Another client still waits on the sleeping handler while the server stops, and an
        # idle keep-alive connection is open: neither may hold up close().
        waiting = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        waiting.sendall(b"GET /data.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        idle.request("GET", "/missing")
        idle.getresponse().read()
        assert server.requests("data.bin") >= 1
    finally:
        start = time.monotonic()
        server.close()
        elapsed = time.monotonic() - start
    assert elapsed < 1, f"close() took {elapsed:.2f}s"
    assert waiting.recv(1024) == b"", "the waiting client is hung up on, not answered"
    waiting.close()
    idle.close()
    with pytest.raises(OSError):
        fetch(server.url("data.bin"), timeout=1)


def test_range_server_context_manager(tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(DATA)
    with range_server(tmp_path) as server:
        assert server.url("data.bin") == f"http://127.0.0.1:{server.port}/data.bin"
        assert fetch(server.url("data.bin"))[2] == DATA
    server.close()  # idempotent


# -- GDAL through /vsicurl/ -------------------------------------------------------------------


@pytest.fixture(scope="module")
def noise_cog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4096^2 uint8 incompressible, uncompressed COG (22 MB with overviews)."""
    root = tmp_path_factory.mktemp("noise")
    return write_standin(
        unique_dir(root) / "noise.tif", UTM_10M, 4096, 4096, 32628, kind="noise", compress=None
    )


@pytest.mark.parametrize("window", [Window(1024, 1536, 512, 512), Window(1000, 1500, 512, 512)])
def test_gdal_reads_a_window_in_place(noise_cog: Path, window: Window) -> None:
    size = noise_cog.stat().st_size
    root = noise_cog.parents[1]
    path = unique_dir(root) / "noise.tif"  # a URL new to GDAL's cache
    path.parent.mkdir()
    path.hardlink_to(noise_cog)
    key = path.relative_to(root).as_posix()
    with rasterio.open(noise_cog) as local:
        expected = local.read(1, window=window)
    with range_server(root) as server:
        with rasterio.Env(**VSICURL_ENV), rasterio.open("/vsicurl/" + server.url(key)) as src:
            assert (src.width, src.height, src.crs) == (4096, 4096, CRS.from_epsg(32628))
            remote = src.read(1, window=window)
        sent, requests = server.bytes_sent(key), server.requests(key)
    np.testing.assert_array_equal(remote, expected)
    assert 0 < sent < size / 10, f"{sent} bytes of {size} in {requests} requests"
    assert requests < 10


def test_gdal_single_get_multirange_uses_one_request(noise_cog: Path) -> None:
    root = noise_cog.parents[1]
    path = unique_dir(root) / "noise.tif"
    path.parent.mkdir()
    path.hardlink_to(noise_cog)
    key = path.relative_to(root).as_posix()
    window = Window(1000, 1500, 512, 512)  # 4 tiles in 2 tile rows: 2 ranges
    with rasterio.open(noise_cog) as local:
        expected = local.read(1, window=window)
    env = {**VSICURL_ENV, "GDAL_HTTP_MULTIRANGE": "SINGLE_GET"}
    with range_server(root) as server:
        with rasterio.Env(**env), rasterio.open("/vsicurl/" + server.url(key)) as src:
            server.reset_counts()
            remote = src.read(1, window=window)
        assert server.requests(key) == 1, "GDAL accepted the multipart answer at once"
        assert server.bytes_sent(key) < 4 * 512 * 512 + 2000  # 4 tiles and the part headers
    np.testing.assert_array_equal(remote, expected)


def test_gdal_no_cache_sees_a_rewritten_file(tmp_path: Path) -> None:
    path = unique_dir(tmp_path) / "band.tif"
    write_standin(path, UTM_10M, 100, 100, 32628, seed=1, overviews=False)
    key = path.relative_to(tmp_path).as_posix()
    with range_server(tmp_path) as server, rasterio.Env(**VSICURL_ENV, **server.gdal_no_cache()):
        with rasterio.open("/vsicurl/" + server.url(key)) as src:
            before = src.read(1)
        write_standin(path, UTM_10M, 100, 100, 32628, seed=2, overviews=False)
        with rasterio.open("/vsicurl/" + server.url(key)) as src:
            after = src.read(1)
    assert after[0, 0] == value_at(*(UTM_10M @ (0.5, 0.5)), seed=2) != before[0, 0]


# -- stand-ins ----------------------------------------------------------------------------------


def test_window_standin_has_the_values_of_the_full_grid(tmp_path: Path) -> None:
    full = write_standin(tmp_path / "full.tif", UTM_10M, 700, 600, 32628, seed=5, blocksize=256)
    row, col = 123, 77
    part_transform = UTM_10M @ Affine.translation(col, row)
    part = write_standin(tmp_path / "part.tif", part_transform, 200, 150, 32628, seed=5)
    with rasterio.open(full) as a, rasterio.open(part) as b:
        assert a.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert a.block_shapes == [(256, 256)]
        assert a.overviews(1) == [2, 4]
        assert (a.nodata, a.dtypes[0]) == (0, "uint16")
        assert b.overviews(1) == []  # no larger than one block
        whole = a.read(1)
        np.testing.assert_array_equal(b.read(1), whole[row : row + 150, col : col + 200])
    assert whole.min() >= 1000 and whole.max() <= 3999
    x, y = UTM_10M @ (col + 0.5, row + 0.5)
    assert whole[row, col] == value_at(x, y, seed=5)
    # constant over 60 m cells (6 x 6 pixels at 10 m; the grid origin is on a 60 m line)
    assert (whole[:6, :6] == whole[0, 0]).all() and whole[0, 6] != whole[0, 0]


def test_noise_and_scl_standins(tmp_path: Path) -> None:
    one = write_standin(tmp_path / "n1.tif", UTM_10M, 300, 200, 32628, kind="noise", seed=1)
    two = write_standin(tmp_path / "n2.tif", UTM_10M, 300, 200, 32628, kind="noise", seed=1)
    scl = write_standin(
        tmp_path / "scl.tif", UTM_10M @ Affine.scale(2), 300, 200, 32628, kind="scl"
    )
    with rasterio.open(one) as a, rasterio.open(two) as b, rasterio.open(scl) as c:
        noise = a.read(1)
        np.testing.assert_array_equal(noise, b.read(1))
        assert noise.dtype == np.uint8 and noise.min() >= 1 and len(np.unique(noise)) > 250
        codes = c.read(1)
        assert c.dtypes[0] == "uint8" and c.nodata == 0
    assert set(np.unique(codes)) == set(SCL_CODES.tolist())


def test_earth_search_window_standins(tmp_path: Path) -> None:
    item_path = stac_item_path(EARTH_SEARCH_ITEM)
    item = load_item(item_path)
    # An odd 10 m offset: the 20 m grids must snap outward to cover it.
    bounds = window_bounds(item, "B04", 5001, 6001, 301)
    with range_server(tmp_path) as server:
        out = standin_item(
            item_path, tmp_path, server.base_url, ["B04", "B05", "SCL"], window=bounds
        )
        rewritten = json.loads(out.read_text())
        href = rewritten["assets"]["B04"]["href"]
        assert href == f"{server.base_url}/{item['id']}/B04.tif"
        with rasterio.Env(**VSICURL_ENV), rasterio.open("/vsicurl/" + href) as src:
            b04_remote = src.read(1)

    files = {key: tmp_path / item["id"] / f"{key}.tif" for key in ("B04", "B05", "SCL")}
    for key, path in files.items():
        grid, _, _, crs = asset_grid(item, key)
        with rasterio.open(path) as src:
            assert src.crs == crs == CRS.from_epsg(32628)
            col, row = ~grid @ (src.transform.c, src.transform.f)
            assert (col, row) == (round(col), round(row)), f"{key} is off its asset grid"
            assert src.transform.a == grid.a and src.transform.e == grid.e
            left, bottom, right, top = src.bounds
            assert left <= bounds[0] < left + grid.a and right - grid.a < bounds[2] <= right
            assert bottom <= bounds[1] < bottom - grid.e and top + grid.e < bounds[3] <= top
    with rasterio.open(files["B04"]) as b04, rasterio.open(files["B05"]) as b05:
        assert (b04.width, b04.height, b05.width, b05.height) == (301, 301, 151, 151)
        b04_data, b05_data = b04.read(1), b05.read(1)
        np.testing.assert_array_equal(b04_remote, b04_data)
        # Every 20 m pixel centre inside the B04 window: the two bands, each minus its own
        # seed's offset, are the same function of the 60 m cell.
        rows, cols = np.mgrid[0 : b05.height, 0 : b05.width]
        xs, ys = b05.transform @ (cols + 0.5, rows + 0.5)
        c4, r4 = ~b04.transform @ (xs, ys)
        inside = (c4 >= 0) & (c4 < b04.width) & (r4 >= 0) & (r4 < b04.height)
        v4 = b04_data[r4[inside].astype(int), c4[inside].astype(int)].astype(int)
        v5 = b05_data[inside].astype(int)
    assert inside.sum() > 140 * 140
    s4, s5 = asset_seed("B04"), asset_seed("B05")
    np.testing.assert_array_equal((v4 - 37 * s4) % 3000, (v5 - 37 * s5) % 3000)
    x, y = float(xs[0, 0]), float(ys[0, 0])
    assert b05_data[0, 0] == value_at(x, y, seed=s5)
    with rasterio.open(files["SCL"]) as scl:
        assert set(np.unique(scl.read(1))) <= set(SCL_CODES.tolist())

    # The rewritten item differs from the original only on the three href lines.
    original = item_path.read_text().splitlines()
    lines = out.read_text().splitlines()
    changed = [new for old, new in zip(original, lines, strict=True) if old != new]
    assert len(changed) == 3 and all('"href"' in line for line in changed)
    assert rewritten["assets"]["B08"]["href"] == item["assets"]["B08"]["href"]


def test_planetary_computer_grid_and_standin(tmp_path: Path) -> None:
    item_path = stac_item_path(PLANETARY_COMPUTER_ITEM)
    item = load_item(item_path)
    transform, width, height, crs = asset_grid(item, "B08")
    assert transform == Affine(10.0, 0.0, 399960.0, 0.0, -10.0, 6800040.0)
    assert (width, height, crs) == (10980, 10980, CRS.from_epsg(32606))
    assert asset_grid(item, "SCL")[1:3] == (5490, 5490)
    with pytest.raises(ValueError, match="proj:shape"):
        asset_grid(item, "preview")
    bounds = window_bounds(item, "B08", 100, 200, 64)
    out = standin_item(item_path, tmp_path, "http://127.0.0.1:1/", ["B08", "visual"], window=bounds)
    with rasterio.open(tmp_path / item["id"] / "visual.tif") as visual:
        assert (visual.count, visual.dtypes[0], visual.width) == (3, "uint8", 64)
        assert visual.transform == transform @ Affine.translation(200, 100)
    assert json.loads(out.read_text())["assets"]["B08"]["href"] == (
        f"http://127.0.0.1:1/{item['id']}/B08.tif"
    )


def test_stac_item_path_skips_when_absent() -> None:
    with pytest.raises(pytest.skip.Exception, match="not present"):
        stac_item_path("no-such-item.json")
