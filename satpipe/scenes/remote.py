"""Remote rasters: reading Cloud-Optimized GeoTIFFs in place over HTTP.

A COG on object storage is read through GDAL's ``/vsicurl/`` with HTTP range requests: opening
it fetches the header, and reading a window fetches only the internal tiles that window covers,
so the bytes transferred follow the window, not the file. :data:`GDAL_HTTP_OPTIONS` is the one
place where GDAL's HTTP behaviour for this workload is set (why, option by option, beside each).

Before GDAL touches a URL, :func:`probe` asks for its first bytes with a ``Range`` header. That
one request tells apart what GDAL would report vaguely or not at all: an unreachable host, an
HTTP error, a redirect loop, a timeout, a server that ignores ``Range`` (it would send the whole
file), and a file that is not a TIFF. It also records what identifies the bytes (size, ETag,
Last-Modified) for the scene's metadata.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import http.client
import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio

from satpipe.core.errors import DownloadError, NoRangeSupportError, NotGeoTIFFError
from satpipe.core.raster import is_tiff_bytes

log = logging.getLogger(__name__)

#: GDAL configuration for reading COGs over HTTP.
GDAL_HTTP_OPTIONS: dict[str, str] = {
    # Opening /vsicurl/<url> would first list the "directory" to look for sidecar files
    # (.aux.xml, .ovr, .msk): an extra request at best, a huge S3 listing at worst. With an
    # "empty" directory GDAL probes for no sidecar; COGs carry everything inside. (Not
    # CPL_VSIL_CURL_ALLOWED_EXTENSIONS: signed URLs end in a query string, not ".tif".)
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # Fetch the whole header (tile offsets of a 10980^2 COG run to tens of KB) in one request.
    "GDAL_INGESTED_BYTES_AT_OPEN": "65536",
    # Adjacent tiles of a window come in one request instead of one per tile.
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    # HTTP/2 multiplexing when the server offers it: parallel tile requests on one connection.
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_VERSION": "2",
    # /vsicurl/'s own region cache, shared by every file of the process (16 MB by default;
    # gdal_env sizes it by the number of files read together, see CURL_CACHE_PER_FILE).
    "CPL_VSIL_CURL_CACHE_SIZE": str(64 << 20),
    # A small per-file cache in front of it for GDAL's many small reads (headers, tile offsets);
    # the 25 MB default, per open file, cost 100 MB of memory for four assets.
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(4 << 20),
    # Retries with exponential backoff (GDAL doubles the delay) on 429, 5xx and network errors.
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
    # A stalled server fails the read instead of hanging the stage.
    "GDAL_HTTP_TIMEOUT": "30",
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
}

_PROBE_BYTES = 16

# Reading a band of rows of one file, /vsicurl/ also fetches ahead; a band of 512 rows of a
# 10980-wide uint16 COG is ~11.5 MB. With four files read in turn, a 16, 32 or 48 MB cache
# evicted each file's read-ahead before it was used and 1.73x the file bytes went over the wire;
# 64 MB gave 1.03x (benchmarks/stac_ingest.py). So: 16 MB per file read together, up to 256 MB.
CURL_CACHE_PER_FILE = 16 << 20
CURL_CACHE_MAX = 256 << 20


@dataclass(frozen=True)
class RemoteFile:
    """What a server said about a file: its size and the validators that identify its bytes."""

    url: str
    size: int | None
    etag: str | None
    last_modified: str | None

    def to_json(self) -> dict[str, Any]:
        """The record kept in the scene's metadata."""
        return {"size": self.size, "etag": self.etag, "last_modified": self.last_modified}


def is_remote(href: str) -> bool:
    """Whether ``href`` is an http(s) URL."""
    return href.startswith(("http://", "https://"))


def gdal_path(href: str) -> str:
    """The path GDAL opens for ``href``: ``/vsicurl/<url>`` for a URL, else ``href``."""
    return f"/vsicurl/{href}" if is_remote(href) else href


@contextlib.contextmanager
def gdal_env(retries: int = 3, timeout: float = 30.0, files: int = 4) -> Iterator[None]:
    """GDAL's HTTP settings (:data:`GDAL_HTTP_OPTIONS`) with the ingest retries and timeout.

    ``files`` is how many remote files are read together (it sizes the /vsicurl/ cache). The
    cache size is read once per process, at the first /vsicurl/ use: enter this before it.
    """
    cache = min(CURL_CACHE_MAX, max(1, files) * CURL_CACHE_PER_FILE)
    options = {
        **GDAL_HTTP_OPTIONS,
        "CPL_VSIL_CURL_CACHE_SIZE": str(cache),
        "GDAL_HTTP_MAX_RETRY": str(retries),
        "GDAL_HTTP_TIMEOUT": str(max(1, round(timeout))),
        "GDAL_HTTP_CONNECTTIMEOUT": str(max(1, round(min(timeout, 10.0)))),
    }
    with rasterio.Env(**options):
        yield


@functools.cache
def _gdal_library() -> ctypes.CDLL | None:
    """The GDAL library rasterio runs on (its bundled copy in a wheel, else the system one)."""
    bundled = sorted(Path(rasterio.__file__).parent.parent.glob("rasterio.libs/libgdal*.so*"))
    name = str(bundled[0]) if bundled else ctypes.util.find_library("gdal")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def forget(href: str) -> None:
    """Drop what GDAL cached of ``href`` in this process (sizes, headers, blocks).

    /vsicurl/ keeps what it fetched for the life of the process, keyed by URL. A long-lived
    process (a Dask worker, a test session) would otherwise read the old bytes of an asset that
    changed under the same URL, and the pixel sha256 would not notice. rasterio has no binding
    for it, so GDAL's ``VSICurlPartialClearCache`` is called through ctypes.
    """
    lib = _gdal_library()
    if lib is None or not is_remote(href):
        return
    try:
        lib.VSICurlPartialClearCache(gdal_path(href).encode())
    except AttributeError:  # a GDAL without /vsicurl/ caching API
        log.debug("GDAL has no VSICurlPartialClearCache; %s may be read from its cache", href)


def _probe_once(url: str, timeout: float) -> RemoteFile:
    request = urllib.request.Request(url, headers={"Range": f"bytes=0-{_PROBE_BYTES - 1}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        head = response.read(_PROBE_BYTES)
        status, headers = response.status, response.headers
    if status != 206:
        raise NoRangeSupportError(
            f"{url}: the server does not support HTTP range requests (it answered {status} to a "
            "Range request); it cannot be read in place"
        )
    if not is_tiff_bytes(head):
        raise NotGeoTIFFError(f"{url}: not a GeoTIFF (starts with {head[:8]!r})")
    total = (headers.get("Content-Range") or "").rpartition("/")[2]
    return RemoteFile(
        url,
        int(total) if total.isdigit() else None,
        headers.get("ETag"),
        headers.get("Last-Modified"),
    )


def probe(url: str, *, retries: int = 3, timeout: float = 30.0) -> RemoteFile:
    """Check that ``url`` serves a TIFF with range requests; return its size and validators.

    Server errors (5xx), timeouts and dropped connections are retried with exponential backoff
    (1 s, 2 s, 4 s, ...); a 4xx, a redirect loop or a server without range support is not.

    Raises:
        NoRangeSupportError: the server answered a Range request with the whole file.
        DownloadError: unreachable host, HTTP error, redirect loop, timeout.
        NotGeoTIFFError: the file does not start with a TIFF signature.
    """
    for attempt in range(retries + 1):
        try:
            return _probe_once(url, timeout)
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                raise DownloadError(f"{url}: redirect loop (HTTP {exc.code})") from None
            if exc.code < 500 or attempt == retries:
                raise DownloadError(f"{url}: server answered HTTP {exc.code}") from None
            reason = f"HTTP {exc.code}"
        except TimeoutError:
            if attempt == retries:
                raise DownloadError(
                    f"{url}: timed out after {timeout:g} s ({attempt + 1} attempts)"
                ) from None
            reason = "timeout"
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError | socket.timeout) and attempt < retries:
                reason = "timeout"
            else:
                raise DownloadError(f"{url}: unreachable ({exc.reason})") from None
        except (http.client.HTTPException, ConnectionError) as exc:
            if attempt == retries:
                raise DownloadError(f"{url}: connection failed ({exc})") from None
            reason = type(exc).__name__
        delay = 2.0**attempt
        log.warning("%s: %s; retrying in %.0f s", url, reason, delay)
        time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
