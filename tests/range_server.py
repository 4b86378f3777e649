"""A local HTTP server with byte-range support, for tests that read files in place over HTTP.

``RangeServer(root)`` serves the files under ``root`` on ``127.0.0.1`` (an ephemeral port) the
way object stores serve Cloud-Optimized GeoTIFFs to GDAL's ``/vsicurl/``: ``GET`` and ``HEAD``,
``Range: bytes=...`` answered with ``206`` and ``Content-Range``, ``Accept-Ranges``,
``Content-Length``, ``ETag`` and ``Last-Modified`` on every answer. It counts requests and body
bytes per path, and a test can make a path misbehave (:meth:`RangeServer.set`): no range
support, a fixed status, a slow answer, a redirect loop or a plain redirect.

Usage::

    with RangeServer(tmp_path) as server:
        url = server.url("item/B04.tif")
        ...
        assert server.bytes_sent("item/B04.tif") < size / 10

or ``with range_server(tmp_path) as server: ...``. Paths are relative to ``root``, written with
``/`` and without a leading slash (one is tolerated); the query string of a request is ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import os
import re
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO
from urllib.parse import quote, unquote, urlsplit

# Behaviour modes and the options each one takes (required options have no default here).
MODES: dict[str, dict[str, Any]] = {
    "no_range": {},
    "status": {"code": None},
    "slow": {"delay": None},
    "redirect_loop": {"code": 302},
    "redirect": {"to": None, "code": 302},
}

_CHUNK = 256 * 1024
_RANGE_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


@dataclass(frozen=True)
class Behaviour:
    """How the server answers ``GET`` and ``HEAD`` of one path (see :meth:`RangeServer.set`)."""

    mode: str
    opts: dict[str, Any] = field(default_factory=dict)


def parse_range(header: str, size: int) -> list[tuple[int, int]] | None:
    """Parse a ``Range`` header against a representation of ``size`` bytes (RFC 7233).

    Args:
        header: The header value, e.g. ``"bytes=0-9,100-"`` or ``"bytes=-500"``.
        size: The size of the file in bytes.

    Returns:
        ``None`` when the header must be ignored (another unit, or a syntax error: the answer
        is then ``200`` with the whole file), else the satisfiable ranges as inclusive
        ``(first, last)`` byte positions, clamped to the file; an empty list means that none
        is satisfiable (``416``).
    """
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes" or not specs.strip():
        return None
    ranges: list[tuple[int, int]] = []
    for spec in specs.split(","):
        if not spec.strip():
            continue  # RFC 7230 list syntax allows empty elements
        match = _RANGE_SPEC.match(spec)
        if match is None:
            return None
        first, last = match.groups()
        if first:
            start = int(first)
            end = int(last) if last else size - 1
            if last and end < start:
                return None  # syntactically invalid: the whole header is ignored
            if start < size:
                ranges.append((start, min(end, size - 1)))
        elif last:
            length = int(last)
            if length > 0 and size > 0:
                ranges.append((max(0, size - length), size - 1))
        else:
            return None  # "bytes=-"
    return ranges


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive, as object stores and curl use it
    timeout = 30  # an idle keep-alive connection ends its thread after this many seconds

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    # -- answering ---------------------------------------------------------------------------

    def _answer(self, body: bool) -> None:
        owner = self.server.owner
        key = unquote(urlsplit(self.path).path).lstrip("/")
        owner._count(key, requests=1)
        behaviour = owner.behaviour.get(key)
        if isinstance(behaviour, str):
            behaviour = Behaviour(behaviour)
        mode = behaviour.mode if behaviour else None
        opts = behaviour.opts if behaviour else {}

        if mode == "slow":
            # Wait on the server's stop event rather than time.sleep: close() wakes every
            # sleeping handler at once, and the handler then drops the connection unanswered.
            if owner._stopping.wait(float(opts["delay"])):
                self.close_connection = True
                return
        elif mode == "status":
            code = int(opts["code"])
            self._send_simple(key, code, f"{code} {self.responses.get(code, ('',))[0]}\n", body)
            return
        elif mode in ("redirect", "redirect_loop"):
            target = opts["to"] if mode == "redirect" else key
            self.send_response(int(opts.get("code", 302)))
            self.send_header("Location", owner.url(target))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return

        path = owner._resolve(key)
        if path is None:
            self._send_simple(key, 404, "not found\n", body)
            return
        self._send_file(key, path, body, ranges_supported=mode != "no_range")

    def _send_simple(self, key: str, code: int, text: str, body: bool) -> None:
        data = b"" if code < 200 or code in (204, 304) else text.encode()  # no body allowed
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self._write(key, data)

    def _send_file(self, key: str, path: Path, body: bool, ranges_supported: bool) -> None:
        stat = path.stat()
        size = stat.st_size
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        header = self.headers.get("Range")
        ranges = parse_range(header, size) if header and ranges_supported else None
        if ranges is not None and not ranges:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self._common_headers(path, stat, ranges_supported, "text/plain", length=0)
            self.end_headers()
            return
        # Pieces of the body: bytes to send as they are, or (first, last) spans of the file.
        pieces: list[bytes | tuple[int, int]]
        content_range = None
        if ranges is None:
            status, pieces = 200, [(0, size - 1)]
        elif len(ranges) == 1:
            status, pieces = 206, list(ranges)
            content_range = "bytes {}-{}/{}".format(*ranges[0], size)
        else:
            # Several ranges: a multipart/byteranges body (RFC 7233 section 4.1 and appendix
            # A), one part per range in the order requested, not coalesced. The simpler valid
            # answer, one 206 range spanning them all, is NOT used: GDAL (the client that
            # sends multi-range requests, with GDAL_HTTP_MULTIRANGE=SINGLE_GET) rejects it
            # ("Could not find 'Content-Type: multipart/byteranges; boundary='"), retries,
            # then falls back to single-range requests, so counts would be far off.
            status, pieces = 206, []
            boundary = uuid.uuid4().hex
            for first, last in ranges:
                part = (
                    f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n"
                )
                pieces += [part.encode("ascii"), (first, last)]
            pieces.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
            content_type = f"multipart/byteranges; boundary={boundary}"
        self.send_response(status)
        if content_range:
            self.send_header("Content-Range", content_range)
        length = sum(len(p) if isinstance(p, bytes) else p[1] - p[0] + 1 for p in pieces)
        self._common_headers(path, stat, ranges_supported, content_type, length=length)
        self.end_headers()
        if not body or length <= 0:
            return
        with path.open("rb") as stream:
            for piece in pieces:
                if isinstance(piece, bytes):
                    if not self._write(key, piece):
                        return
                elif not self._copy(key, stream, *piece):
                    return

    def _copy(self, key: str, stream: BinaryIO, first: int, last: int) -> bool:
        """Send bytes ``first..last`` of an open file; False if the client has gone away."""
        stream.seek(first)
        remaining = last - first + 1
        while remaining > 0:
            chunk = stream.read(min(_CHUNK, remaining))
            if not chunk:
                self.close_connection = True  # the file shrank: the body is short, hang up
                return False
            if not self._write(key, chunk):
                return False
            remaining -= len(chunk)
        return True

    def _common_headers(
        self,
        path: Path,
        stat: os.stat_result,
        ranges_supported: bool,
        content_type: str,
        length: int,
    ) -> None:
        owner = self.server.owner
        if ranges_supported:
            self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", owner._etag(path, stat))
        self.send_header("Last-Modified", formatdate(stat.st_mtime, usegmt=True))

    def _write(self, key: str, data: bytes) -> bool:
        """Send body bytes and count them; False if the client has gone away.

        Counted before the write, so a client that has read the body always sees the count;
        a chunk whose write fails is taken back (it was at most partly sent).
        """
        owner = self.server.owner
        owner._count(key, sent=len(data))
        try:
            self.wfile.write(data)
        except OSError:  # BrokenPipeError, ConnectionResetError, a socket closed by close()
            owner._count(key, sent=-len(data))
            self.close_connection = True
            return False
        return True


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler still running never keeps the process alive
    block_on_close = False
    owner: RangeServer

    def __init__(self, owner: RangeServer) -> None:
        self.owner = owner
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def track(self, connection: socket.socket, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections[connection] = threading.current_thread()
            else:
                self._connections.pop(connection, None)

    def drop_connections(self) -> list[threading.Thread]:
        """Shut down every open client connection; return the threads that served them."""
        with self._connections_lock:
            connections = list(self._connections.items())
        for connection, _ in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        return [thread for _, thread in connections]

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that time out or stop reading are expected; no tracebacks


class RangeServer:
    """Serve the files under ``root`` on ``http://127.0.0.1:<port>/`` with range support.

    The server starts at construction and stops with :meth:`close` (or at the end of a
    ``with`` block). Counters and behaviours are keyed by the path relative to ``root``.

    Attributes:
        root: The directory served.
        base_url: ``http://127.0.0.1:<port>``, without a trailing slash.
        behaviour: Path -> :class:`Behaviour` (or a bare mode name such as ``"no_range"``);
            prefer :meth:`set`, which checks the mode and its options.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.behaviour: dict[str, Behaviour | str] = {}
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._sent: Counter[str] = Counter()
        self._etags: dict[tuple[str, int, int], str] = {}
        self._stopping = threading.Event()
        self._closed = False
        self._httpd = _HTTPServer(self)
        host, port = self._httpd.server_address[:2]
        self.base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},  # shutdown() waits up to one interval
            name=f"RangeServer:{port}",
            daemon=True,
        )
        self._thread.start()

    # -- addresses and counters -----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self._httpd.server_address[1])

    def url(self, path: str) -> str:
        """``http://127.0.0.1:<port>/<path>`` for a path relative to the root (URL-quoted)."""
        return f"{self.base_url}/{quote(_key(path))}"

    def gdal_no_cache(self) -> dict[str, str]:
        """GDAL config that turns off ``/vsicurl/``'s cache for this server's URLs.

        GDAL caches file sizes, headers and blocks per URL for the life of the process: a
        second open of a URL may send no request at all, and a file rewritten under the same
        URL is read stale. Pass this to ``rasterio.Env`` in tests that rewrite served files;
        tests that count bytes should rather use URLs new to the process (uncached reads
        may fetch more than a real client would).
        """
        return {"CPL_VSIL_CURL_NON_CACHED": f"/vsicurl/{self.base_url}/"}

    def bytes_sent(self, path: str) -> int:
        """Body bytes sent for ``path`` since the last reset.

        Headers are excluded; multipart framing is included. A byte counts once handed to the
        socket, so a client that hangs up early may have read fewer.
        """
        with self._lock:
            return self._sent[_key(path)]

    def requests(self, path: str) -> int:
        """Requests (any method, any answer) received for ``path`` since the last reset."""
        with self._lock:
            return self._requests[_key(path)]

    def total_bytes(self) -> int:
        """Body bytes sent for all paths since the last reset (see :meth:`bytes_sent`)."""
        with self._lock:
            return sum(self._sent.values())

    def total_requests(self) -> int:
        """Requests received for all paths since the last reset."""
        with self._lock:
            return sum(self._requests.values())

    def reset_counts(self) -> None:
        """Set every request and byte counter back to zero."""
        with self._lock:
            self._requests.clear()
            self._sent.clear()

    def _count(self, key: str, requests: int = 0, sent: int = 0) -> None:
        with self._lock:
            if requests:
                self._requests[key] += requests
            if sent:
                self._sent[key] += sent

    # -- behaviours -----------------------------------------------------------------------------

    def set(self, path: str, mode: str, **opts: Any) -> None:
        """Make ``GET`` and ``HEAD`` of ``path`` misbehave (or redirect) from now on.

        Args:
            path: Path relative to the root (it need not exist for ``status`` and redirects).
            mode: One of ``"no_range"`` (ignore ``Range``: always ``200`` with the whole file
                and no ``Accept-Ranges``), ``"status"`` (answer ``code`` with a short body),
                ``"slow"`` (wait ``delay`` seconds, then answer normally), ``"redirect_loop"``
                (``302`` to itself) or ``"redirect"`` (one ``302`` to the path ``to``). Two
                ``"redirect"`` paths pointing at each other make a two-path loop.
            **opts: The mode's options: ``code`` (status; also the redirect code, default
                302), ``delay`` (slow), ``to`` (redirect).

        Raises:
            ValueError: For an unknown mode, an unknown option or a missing one.
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {sorted(MODES)}")
        allowed = MODES[mode]
        unknown = set(opts) - set(allowed)
        if unknown:
            raise ValueError(f"mode {mode!r} takes {sorted(allowed)}, not {sorted(unknown)}")
        merged = {name: value for name, value in allowed.items() if value is not None}
        merged.update(opts)
        missing = set(allowed) - set(merged)
        if missing:
            raise ValueError(f"mode {mode!r} needs {sorted(missing)}")
        if mode == "redirect":
            merged["to"] = _key(merged["to"])
        self.behaviour[_key(path)] = Behaviour(mode, merged)

    def clear(self, path: str | None = None) -> None:
        """Restore normal answers for ``path`` (for every path when None)."""
        if path is None:
            self.behaviour.clear()
        else:
            self.behaviour.pop(_key(path), None)

    # -- files ----------------------------------------------------------------------------------

    def _resolve(self, key: str) -> Path | None:
        """The file served for ``key``, or None (missing, a directory, or outside the root)."""
        if not key:
            return None
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path

    def _etag(self, path: Path, stat: os.stat_result) -> str:
        """A quoted SHA-256 of the file, computed once per (path, size, mtime)."""
        cache_key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            etag = self._etags.get(cache_key)
        if etag is None:
            with path.open("rb") as stream:
                etag = f'"{hashlib.file_digest(stream, "sha256").hexdigest()}"'
            with self._lock:
                self._etags[cache_key] = etag
        return etag

    # -- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop serving: wake slow handlers, drop open connections, join the threads.

        Returns promptly even while handlers are sleeping in ``"slow"`` mode or clients
        hold keep-alive connections open. Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._httpd.shutdown()  # stops serve_forever within one poll interval
        handlers = self._httpd.drop_connections()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        for thread in handlers:
            thread.join(timeout=1)

    def __enter__(self) -> RangeServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _key(path: str) -> str:
    """The counter and behaviour key of a path: relative, ``/``-separated, no leading slash."""
    return str(path).replace(os.sep, "/").lstrip("/")


@contextlib.contextmanager
def range_server(root: Path) -> Iterator[RangeServer]:
    """Serve ``root`` for the duration of a ``with`` block (see :class:`RangeServer`).

    Args:
        root: The directory whose files are served.

    Yields:
        The running server; it is closed when the block ends.
    """
    server = RangeServer(root)
    try:
        yield server
    finally:
        server.close()
