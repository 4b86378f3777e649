"""Headless Chromium for tests: a page opened, waited on, screenshotted and its console read.

A *browser* here is Debian's ``chromium`` driven by Selenium through Debian's ``chromedriver``
(``make browser`` installs both with apt-get). The driver is given by path, so Selenium Manager
never tries to download one. Every browser is headless (``--headless=new``), runs as root
(``--no-sandbox``), without a GPU, at a fixed window size and device scale factor 1 (a
screenshot pixel is a CSS pixel), and keeps the page's console log (``goog:loggingPrefs``).

Usage::

    reason = chromium_available()
    if reason:
        pytest.skip(reason)
    with browser(640, 480) as page:
        page.open(url)
        page.wait_for("document.querySelector('svg') !== null")
        rgb = page.screenshot()[y, x, :3]
        assert page.console_errors() == []

``offline=True`` makes every host name unresolvable (``--host-resolver-rules``), so a page that
still loads from a CDN fails visibly; ``file://`` and ``127.0.0.1`` keep working.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

CHROMIUM = os.environ.get("SATPIPE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SATPIPE_CHROMEDRIVER", "/usr/bin/chromedriver")

# Every host resolves to nothing (IP literals too), except 127.0.0.1, where test servers listen.
OFFLINE_RULES = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


def chromium_available() -> str | None:
    """Why no headless browser can run here, or None when one can.

    Returns:
        A reason to pass to ``pytest.skip`` (Chromium, its driver or Selenium missing), or None.
    """
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not found: run `make browser` (apt-get install {package})"
    try:
        import selenium.webdriver  # noqa: F401
    except ImportError:
        return "selenium is not installed: run `make install`"
    return None


class Browser:
    """A thin wrapper over one Selenium Chrome driver (see :func:`browser`)."""

    def __init__(self, driver: Any) -> None:
        """Wrap a started driver; :func:`browser` makes and quits it."""
        self.driver = driver
        self._log: list[dict[str, Any]] = []

    def open(self, url: str) -> None:
        """Load ``url`` (http://, file:// or data:) and wait for its load event.

        The console log starts afresh: :meth:`console` then tells of this page only.

        Args:
            url: The page's address.
        """
        self.driver.get_log("browser")  # drained: what earlier pages logged is dropped
        self._log = []
        self.driver.get(url)

    def run(self, js: str) -> Any:
        """Run JavaScript in the page and return its result.

        Args:
            js: A function body (use ``return`` to give back a value).

        Returns:
            The result, converted by Selenium (numbers, strings, lists, dicts, elements).
        """
        return self.driver.execute_script(js)

    def wait_for(self, js_condition: str, timeout: float = 20) -> None:
        """Poll a JavaScript expression until it is truthy.

        Args:
            js_condition: An expression, evaluated as ``return (<expression>)``.
            timeout: Seconds to wait.

        Raises:
            AssertionError: Still falsy after ``timeout``; the message holds the console log.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.run(f"return ({js_condition});"):
                return
            if time.monotonic() > deadline:
                console = "\n".join(self.console()) or "(empty)"
                raise AssertionError(
                    f"{js_condition!r} still false after {timeout} s at {self.driver.current_url}"
                    f"; console:\n{console}"
                )
            time.sleep(0.1)

    def screenshot(self) -> np.ndarray:
        """The viewport as pixels.

        Returns:
            An array of shape (height, width, 3 or 4), uint8 (RGB or RGBA, as the PNG has it).
        """
        from rasterio.errors import NotGeoreferencedWarning
        from rasterio.io import MemoryFile

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a PNG has no geotransform
            with MemoryFile(self.driver.get_screenshot_as_png()) as memfile, memfile.open() as png:
                return np.moveaxis(png.read(), 0, -1)

    def console(self) -> list[str]:
        """Every console entry so far, as ``LEVEL message`` lines (kept across calls)."""
        self._log.extend(self.driver.get_log("browser"))
        return [f"{entry['level']} {entry['message']}" for entry in self._log]

    def console_errors(self) -> list[str]:
        """The console entries of level SEVERE so far (errors, failed loads), as messages."""
        self.console()
        return [entry["message"] for entry in self._log if entry["level"] == "SEVERE"]


@contextmanager
def browser(
    width: int = 1024, height: int = 768, *, offline: bool = False, args: Sequence[str] = ()
) -> Iterator[Browser]:
    """Start headless Chromium, and quit it on exit.

    Args:
        width: Window width in CSS pixels (= screenshot pixels).
        height: Window height.
        offline: Make every host name unresolvable, so no CDN or other remote host is reached.
        args: More Chromium command-line switches.

    Yields:
        The browser.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    switches = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    switches += [f"--window-size={width},{height}", "--force-device-scale-factor=1"]
    switches += ["--hide-scrollbars", "--no-first-run", "--disable-extensions"]
    switches += [OFFLINE_RULES] if offline else []
    for switch in [*switches, *args]:
        options.add_argument(switch)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        # --window-size sets the window, not the viewport: make the viewport exact.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        yield Browser(driver)
    finally:
        driver.quit()
