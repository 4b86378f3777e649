"""`dvc plots show` and `dvc plots diff` pages draw their vega plots offline.

The page template (``.dvc/plots/html/offline.html``, ``plots.html_template`` in ``.dvc/config``)
carries vega, vega-lite and vega-embed inline. On the small per-pixel pipeline run
(``segmentation_repo``, which gets the project's ``.dvc/config`` and ``.dvc/plots``), the pages
that DVC writes are opened from ``file://`` in headless Chromium with every host name
unresolvable: each vega plot must be drawn (the confusion matrix's cells are coloured pixels in
the screenshot) with no console error. DVC's own page, which loads the libraries from a CDN,
stays blank under the same conditions.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from dvc_render.html import PAGE_HTML

from tests.browser import Browser, browser, chromium_available
from tests.helpers import REPO
from tests.helpers import output as run
from tests.serve_fixtures import segmentation_repo  # noqa: F401

TEMPLATE_DIR = REPO / ".dvc" / "plots" / "html"
CONFUSION = "data_plots_confusion_pixels_json"  # the div DVC writes for confusion_pixels.json
# DVC writes each vega plot as <div id="ID"><script>...vegaEmbed('#ID', spec);</script></div>;
# vega-embed replaces the script with a div.chart-wrapper holding the view's canvas (or svg).
EMBED = re.compile(r"vegaEmbed\('#([\w-]+)'")
VIEWS = "document.querySelectorAll('.chart-wrapper > canvas, .chart-wrapper > svg')"


def vega_ids(page: Path) -> list[str]:
    """The ids of the divs that DVC's page draws vega plots in."""
    return EMBED.findall(page.read_text(encoding="utf-8"))


def test_template_is_self_contained() -> None:
    page = (TEMPLATE_DIR / "offline.html").read_text(encoding="utf-8")
    assert "{plot_divs}" in page and "{scripts}" not in page  # no CDN tags from DVC
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert '<meta charset="utf-8">' in page  # the builds hold non-ASCII text
    banners = re.findall(r"<script>/\* (\S+)@(\S+) (\S+) \(BSD-3-Clause\) \*/", page)
    assert [name for name, _, _ in banners] == ["vega", "vega-lite", "vega-embed"]
    readme = (TEMPLATE_DIR / "README.md").read_text()
    vendor = (TEMPLATE_DIR / "vendor.sh").read_text()
    for name, version, file in banners:
        assert f"| {version} | `{file}` |" in readme and f"{name}@{version}" in vendor
        licence = (TEMPLATE_DIR / f"LICENSE.{name}").read_text()
        assert "Redistribution and use in source and binary forms" in licence
    config = (REPO / ".dvc" / "config").read_text()
    assert re.search(r"^\s*html_template = plots/html/offline\.html$", config, re.M)


@pytest.fixture(scope="module")
def pages(
    segmentation_repo: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    """The pages of ``dvc plots show``, ``dvc plots diff HEAD`` and of DVC's own template."""
    out = tmp_path_factory.mktemp("plots")
    run(["dvc", "plots", "show", "-o", str(out / "show")], segmentation_repo)
    run(["dvc", "plots", "diff", "HEAD", "-o", str(out / "diff")], segmentation_repo)
    default = out / "dvc_default.html"
    default.write_text(PAGE_HTML, encoding="utf-8")
    run(
        ["dvc", "plots", "show", "--html-template", str(default), "-o", str(out / "default")],
        segmentation_repo,
    )
    return {name: out / name / "index.html" for name in ("show", "diff", "default")}


@pytest.fixture(scope="module")
def offline_browser() -> Iterator[Browser]:
    """Headless Chromium that resolves no host name (a CDN cannot be reached)."""
    reason = chromium_available()
    if reason:
        pytest.skip(reason)
    with browser(1200, 1000, offline=True) as page:
        yield page


def coloured_share(page: Browser, element_id: str) -> float:
    """The share of an element's on-screen pixels that are coloured (not white, grey or black)."""
    page.run(f"document.getElementById('{element_id}').scrollIntoView();")
    box = page.run(f"return document.getElementById('{element_id}').getBoundingClientRect();")
    pixels = page.screenshot()[..., :3].astype(np.int16)
    top, left = max(int(box["top"]), 0), max(int(box["left"]), 0)
    crop = pixels[top : int(box["bottom"]), left : int(box["right"])]
    assert crop.size, f"#{element_id} is off screen: {box}"
    saturation = crop.max(axis=-1) - crop.min(axis=-1)
    return float((saturation > 30).mean())


def assert_drawn(page: Browser, path: Path) -> None:
    """Every vega plot of the page at ``path`` is drawn; the confusion matrix is coloured."""
    ids = vega_ids(path)
    assert CONFUSION in ids and len(ids) > 1, ids
    page.open(path.as_uri())
    page.wait_for(f"{VIEWS}.length === {len(ids)}")
    # Views of empty plot files (the tile plots of a per-pixel run) are drawn 0 wide.
    for drawn in (CONFUSION, "data_plots_class_iou_json"):
        width = page.run(f"return document.querySelector('#{drawn} canvas').width;")
        assert width > 200, f"#{drawn} is {width} px wide"
    # The heat map: a sixth of its box or more is cell colour once vega has run (0 before).
    share = 0.0
    for _ in range(50):
        share = coloured_share(page, CONFUSION)
        if share > 0.15:
            break
        time.sleep(0.1)
    assert share > 0.15, f"the confusion matrix is not drawn: {share:.1%} coloured pixels"
    assert page.console_errors() == []


@pytest.mark.slow
def test_show_draws_offline(pages: dict[str, Path], offline_browser: Browser) -> None:
    html = pages["show"].read_text(encoding="utf-8")
    assert "cdn.jsdelivr" not in html and "vega-embed@6.29.0" in html
    assert_drawn(offline_browser, pages["show"])


@pytest.mark.slow
def test_diff_uses_the_same_page(pages: dict[str, Path], offline_browser: Browser) -> None:
    html = pages["diff"].read_text(encoding="utf-8")
    assert "cdn.jsdelivr" not in html and "vega-embed@6.29.0" in html
    assert_drawn(offline_browser, pages["diff"])


@pytest.mark.slow
def test_dvc_default_page_is_blank_offline(
    pages: dict[str, Path], offline_browser: Browser
) -> None:
    """What the template fixes: DVC's own page loads vega from a CDN, so offline nothing draws."""
    offline_browser.open(pages["default"].as_uri())
    offline_browser.wait_for("document.readyState === 'complete'")
    assert CONFUSION in vega_ids(pages["default"])
    assert offline_browser.run("return typeof vegaEmbed;") == "undefined"
    assert offline_browser.run(f"return {VIEWS}.length;") == 0
    errors = offline_browser.console_errors()
    assert any("cdn.jsdelivr.net" in e and "ERR_NAME_NOT_RESOLVED" in e for e in errors)
    assert any("vegaEmbed is not defined" in e for e in errors)
