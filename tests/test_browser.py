"""tests/browser.py: headless Chromium opens pages, screenshots pixels and reads the console."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.browser import browser, chromium_available

# A 31x17 red box at (40, 30) on white, a blue page corner, and one console error.
PAGE = """<!doctype html><html><body style="margin:0;background:#fff">
<div style="position:absolute;left:40px;top:30px;width:31px;height:17px;background:#f00"></div>
<div style="position:absolute;left:0;top:0;width:5px;height:5px;background:#00f"></div>
<script>console.error("satpipe-test-error " + (6 * 7)); document.title = "ready";</script>
</body></html>"""


@pytest.fixture(scope="module", autouse=True)
def _needs_chromium() -> None:
    reason = chromium_available()
    if reason:
        pytest.skip(reason)


@contextlib.contextmanager
def _http_server(root: Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 (an ephemeral port) until the block ends; yields the URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_data_url_pixels_and_console_error() -> None:
    with browser(160, 90) as page:
        page.open("data:text/html," + quote(PAGE))
        page.wait_for("document.title === 'ready'")
        pixels = page.screenshot()
        assert pixels.shape[:2] == (90, 160) and pixels.dtype.name == "uint8"
        assert pixels[40, 55, :3].tolist() == [255, 0, 0]  # inside the red box
        assert pixels[40, 75, :3].tolist() == [255, 255, 255]  # just right of it
        assert pixels[46, 70, :3].tolist() == [255, 0, 0]  # its last row and column
        assert pixels[2, 2, :3].tolist() == [0, 0, 255]
        assert page.run("return 6 * 7;") == 42
        errors = page.console_errors()
        assert len(errors) == 1 and "satpipe-test-error 42" in errors[0]


def test_wait_for_timeout_reports_the_console() -> None:
    with browser(120, 80) as page:
        page.open("data:text/html," + quote(PAGE))
        with pytest.raises(AssertionError, match="satpipe-test-error 42"):
            page.wait_for("window.neverSet === true", timeout=0.5)


def test_offline_reaches_localhost_but_no_host_name(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text(
        '<!doctype html><body><p id="p">local</p>'
        '<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>'
        "<script>document.title = typeof vega;</script></body>"
    )
    with _http_server(tmp_path) as url, browser(200, 100, offline=True) as page:
        page.open(f"{url}/index.html")
        page.wait_for("document.title !== ''")
        assert page.run("return document.getElementById('p').textContent;") == "local"
        assert page.run("return document.title;") == "undefined"  # the CDN script never ran
        errors = page.console_errors()
        assert any("cdn.jsdelivr.net" in e and "ERR_NAME_NOT_RESOLVED" in e for e in errors)
