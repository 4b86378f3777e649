"""What a STAC item says about its values: each asset's correction, and the properties kept.

Sentinel-2 L2A from processing baseline 04.00 on stores reflectance with an offset
(``BOA_ADD_OFFSET`` = -1000). :func:`correction` decides, band by band, what turns stored values
into the scene's values: ``raster:bands`` ``scale``/``offset`` when the item gives them, except an
offset the catalogue says it already applied (``earthsearch:boa_offset_applied``); otherwise, for
a Sentinel-2 L2A reflectance band at baseline 04.00 or later, offset -1000; otherwise nothing.
The decision is recorded in the scene's metadata.
"""

from __future__ import annotations

import re
from typing import Any

from satpipe.scenes.stac import Asset

_S2_REFLECTANCE = re.compile(r"^B(0[1-9]|1[0-2]|8A)$")
_BASELINE_IN_ID = re.compile(r"_N(\d{2})(\d{2})_")
S2_BOA_OFFSET = -1000.0


def processing_baseline(item: dict[str, Any]) -> str | None:
    """The Sentinel-2 processing baseline (``"04.00"``), from the properties or the product id."""
    props = item.get("properties", {})
    for key in ("s2:processing_baseline", "processing:version", "sentinel2:processing_baseline"):
        if props.get(key):
            return str(props[key])
    for key in ("s2:product_uri", "sentinel:product_id", "s2:granule_id"):
        match = _BASELINE_IN_ID.search(str(props.get(key) or ""))
        if match:
            return f"{match.group(1)}.{match.group(2)}"
    return None


def _platform(props: dict[str, Any]) -> Any:
    """``platform``, or ``eo:platform`` as items before STAC 0.9 name it."""
    return props.get("platform") or props.get("eo:platform")


def _is_s2_l2a(item: dict[str, Any]) -> bool:
    props = item.get("properties", {})
    platform = str(_platform(props) or props.get("constellation") or "").lower()
    names = " ".join(
        str(v or "")
        for v in (
            item.get("id"),
            item.get("collection"),
            props.get("s2:product_type"),
            props.get("s2:product_uri"),
            props.get("sentinel:product_id"),
        )
    ).upper()
    is_s2 = "sentinel-2" in platform.replace(" ", "-") or "SENTINEL2" in platform.upper()
    return is_s2 and ("L2A" in names or "S2MSI2A" in names)


def correction(item: dict[str, Any], asset: Asset) -> dict[str, Any]:
    """How ``asset``'s stored values become the scene's: ``{"scale", "offset", "rule"}``.

    See the module docstring for the rules, in order.
    """
    bands = asset.data.get("raster:bands") or []
    applied = item.get("properties", {}).get("earthsearch:boa_offset_applied")
    if bands and ("scale" in bands[0] or "offset" in bands[0]):
        scale = float(bands[0].get("scale", 1.0))
        offset = float(bands[0].get("offset", 0.0))
        if applied is True and offset:
            return {
                "scale": scale,
                "offset": 0.0,
                "rule": "raster:bands scale; offset already in the pixels "
                "(earthsearch:boa_offset_applied)",
            }
        return {"scale": scale, "offset": offset, "rule": "raster:bands scale and offset"}
    baseline = processing_baseline(item)
    if (
        applied is not True
        and _is_s2_l2a(item)
        and _S2_REFLECTANCE.match(asset.key)
        and baseline is not None
        and baseline >= "04.00"
    ):
        return {
            "scale": 1.0,
            "offset": S2_BOA_OFFSET,
            "rule": f"Sentinel-2 L2A baseline {baseline}: BOA_ADD_OFFSET {S2_BOA_OFFSET:g}",
        }
    return {"scale": 1.0, "offset": 0.0, "rule": "none"}


def properties_record(item: dict[str, Any]) -> dict[str, Any]:
    """The item properties kept in the scene's metadata."""
    props = item.get("properties", {})
    return {
        "datetime": props.get("datetime"),
        "platform": _platform(props),
        "constellation": props.get("constellation"),
        "eo:cloud_cover": props.get("eo:cloud_cover"),
        "processing_baseline": processing_baseline(item),
        "earthsearch:boa_offset_applied": props.get("earthsearch:boa_offset_applied"),
    }
