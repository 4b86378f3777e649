"""Params of the ``ingest`` section: the scene or scenes, their reference labels, STAC items.

:class:`IngestParams` is the section: one scene (the keys of :class:`SceneParams`) or a list of
them in ``scenes``. A scene's ``labels`` (:class:`LabelParams`) and ``stac``
(:class:`StacParams`, with its area of interest :class:`AoiParams`) are nested sections: unset
when every key holds its default (see :mod:`satpipe.core.params_base`).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import PurePosixPath
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from satpipe.core.params_base import NestedSection, Section, check_class_names

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def parse_iso8601(value: str) -> dt.datetime:
    """Parse an ISO 8601 timestamp into an aware UTC datetime (naive means UTC).

    Raises:
        ValueError: the string is not ISO 8601.
    """
    parsed = dt.datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _sha256(value: str | None) -> str | None:
    """A sha256 param: 64 hexadecimal characters, stored in lower case (or None)."""
    if value is not None and not _SHA256.match(value.lower()):
        raise ValueError("expected 64 hexadecimal characters")
    return None if value is None else value.lower()


class LabelParams(NestedSection):
    """A scene's reference labels: a raster of integer class codes and what the codes mean.

    The raster comes from ``path`` (a local GeoTIFF, absolute or relative to params.yaml) or
    ``url`` (downloaded, verified against ``sha256`` like a scene). ``classes`` maps each model
    class to the codes that mean it, e.g. ``{bright: [8, 9, 10, 11], dark: [4, 5, 6]}``; codes
    not listed are unlabelled. A synthetic scene carries its own label raster: there only
    ``classes`` may be set, to remap its surface codes. All keys null: no labels (``None``).
    """

    path: str | None = None
    url: str | None = None
    sha256: str | None = None
    asset: str | None = None
    classes: dict[str, list[int]] | None = None

    @field_validator("sha256")
    @classmethod
    def _check_sha256(cls, value: str | None) -> str | None:
        return _sha256(value)

    @field_validator("classes")
    @classmethod
    def _check_classes(cls, value: dict[str, list[int]] | None) -> dict[str, list[int]] | None:
        if value is None:
            return None
        check_class_names(list(value))
        owner: dict[int, str] = {}
        for name, codes in value.items():
            if not codes:
                raise ValueError(f"class {name!r} lists no code; expected a list of integers")
            for code in codes:
                if code in owner and owner[code] != name:
                    raise ValueError(
                        f"code {code} is listed under two classes ({owner[code]!r} and "
                        f"{name!r}); expected each code under one class"
                    )
                owner[code] = name
        return {name: sorted(set(codes)) for name, codes in value.items()}

    @model_validator(mode="after")
    def _check_source(self) -> LabelParams:
        if sum(v is not None for v in (self.path, self.url, self.asset)) > 1:
            raise ValueError("{at}: set one of path, url or asset")
        if self.url is not None:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"{{at}}.url {self.url!r} is not an http(s) URL")
            if not self.sha256:
                raise ValueError("{at}.url needs {at}.sha256 (downloads are always verified)")
        return self


class AoiParams(NestedSection):
    """An area of interest: a ``bbox`` (left, bottom, right, top) in ``crs``, or a GeoJSON file.

    Unset (``None``: the whole item) while ``bbox`` and ``geojson`` are null and ``crs`` is the
    default.
    """

    bbox: list[float] | None = Field(None, min_length=4, max_length=4)
    crs: str = "EPSG:4326"
    geojson: str | None = None

    @model_validator(mode="after")
    def _check_one(self) -> AoiParams:
        if (self.bbox is None) == (self.geojson is None):
            raise ValueError("{at}: set bbox (with crs) or geojson, exactly one")
        if self.bbox is not None:
            left, bottom, right, top = self.bbox
            if not (left < right and bottom < top):
                raise ValueError(
                    f"{{at}}.bbox {self.bbox}: expected [left, bottom, right, top] with "
                    "left < right and bottom < top"
                )
        return self


class StacParams(NestedSection):
    """``ingest.stac``: the item, the bands to stack, how to resample, where, and pins.

    ``assets`` are asset keys (``B04``) or ``eo:bands`` common names (``red``), in band order.
    ``pixels_sha256`` optionally pins, per asset key, the sha256 of the pixels read. Unset
    (``None``) while ``item`` and ``assets`` are null and the rest hold their defaults.
    """

    item: str
    assets: list[str] = Field(min_length=1)
    resampling: Literal["nearest", "bilinear", "cubic", "average"] = "nearest"
    aoi: AoiParams | None = None
    pixels_sha256: dict[str, str] | None = None

    @field_validator("pixels_sha256")
    @classmethod
    def _check_pins(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        return {key: _sha256(sha) or "" for key, sha in value.items()}


_SCENE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class SceneParams(Section):
    """One scene: where it comes from, how it is validated, and what it is used for.

    ``role`` says whether its tiles train the model (``train``), are classified and compared with
    training in the health report (``infer``), or both (``both``: split by ``train.fraction``).
    ``id`` names its files; by default it is derived from the source (see :func:`scene_id`).
    """

    source: Literal["synthetic", "file", "http", "stac"] = "synthetic"
    path: str | None = None
    url: str | None = None
    fetch: Literal["range", "download"] = "range"
    sha256: str | None = None
    acquisition_time: str | None = None
    nodata: float | None = None
    seed: int = Field(42, ge=0)
    width: int = Field(2048, ge=1, le=200_000)
    height: int = Field(2048, ge=1, le=200_000)
    role: Literal["train", "infer", "both"] = "both"
    id: str | None = None
    labels: LabelParams | None = None
    stac: StacParams | None = None

    @field_validator("sha256")
    @classmethod
    def _check_sha256(cls, value: str | None) -> str | None:
        return _sha256(value)

    @field_validator("acquisition_time")
    @classmethod
    def _check_time(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_iso8601(value)
            except ValueError:
                raise ValueError("expected an ISO 8601 time such as 2024-07-15T10:30:00Z") from None
        return value

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        if value is not None and not _SCENE_ID.match(value):
            raise ValueError("expected 1-100 letters, digits, '.', '_' or '-' (not first)")
        return value

    @model_validator(mode="after")
    def _check_source(self) -> SceneParams:
        if self.source == "file" and not self.path:
            raise ValueError("source 'file' needs {at}.path")
        if self.source == "stac" and self.stac is None:
            raise ValueError("source 'stac' needs {at}.stac.item and {at}.stac.assets")
        if self.source == "http":
            if not self.url:
                raise ValueError("source 'http' needs {at}.url")
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"{{at}}.url {self.url!r} is not an http(s) URL")
            if self.fetch == "download" and not self.sha256:
                raise ValueError(
                    "{at}.fetch 'download' needs {at}.sha256 (downloads are always verified)"
                )
        labels = self.labels
        if labels is not None:
            if self.source == "synthetic" and (labels.path or labels.url or labels.asset):
                raise ValueError(
                    "a synthetic scene carries its own labels; {at}.labels may only set classes"
                )
            if labels.asset is not None and self.source != "stac":
                raise ValueError("{at}.labels.asset names an item asset: only for source 'stac'")
            if self.source != "synthetic" and not (labels.path or labels.url or labels.asset):
                raise ValueError(
                    "{at}.labels needs a path or a url to a label GeoTIFF (or, for source "
                    "'stac', the item's label asset)"
                )
            if self.source != "synthetic" and not labels.classes:
                raise ValueError(
                    "{at}.labels needs classes: which codes mean which class, "
                    "e.g. {bright: [8, 9, 10, 11], dark: [4, 5, 6]}"
                )
        return self

    @property
    def scene_id(self) -> str:
        """``id``, or one derived from the source: ``synthetic-<seed>`` or the file/URL stem.

        A STAC scene without ``id`` is named after its item's own ``id``, known only once ingest
        reads the item (:func:`satpipe.scenes.ingest.resolve_scene_ids`). Until then this is the
        whole item reference made safe (``a/item.json`` -> ``a-item.json``, its last 100
        characters): two scenes naming one item already share it here, two items in files of
        the same name (``a/item.json``, ``b/item.json``) do not.
        """
        if self.id is not None:
            return self.id
        if self.source == "synthetic":
            return f"synthetic-{self.seed}"
        if self.source == "stac" and self.stac is not None:
            ref = re.sub(r"[^A-Za-z0-9._-]+", "-", self.stac.item)[-100:]
            return ref.lstrip("._-").rstrip("-") or "scene"
        if self.source == "http":
            name = PurePosixPath(urlsplit(self.url or "").path)
        else:
            name = PurePosixPath(self.path or "")
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name.stem).strip("-.") or "scene"
        return stem[:100]


class IngestParams(SceneParams):
    """``ingest``: one scene (the keys of :class:`SceneParams`) or a list in ``scenes``.

    When ``scenes`` is set it lists every scene, and the single-scene keys at the top of the
    section are not used. ``skip_invalid`` records an invalid scene in the ingest metrics and goes
    on, instead of failing the stage.
    """

    retries: int = Field(3, ge=0, le=20)
    timeout: float = Field(30.0, gt=0)
    scenes: list[SceneParams] | None = None
    skip_invalid: bool = False

    @model_validator(mode="after")
    def _check_scenes(self) -> IngestParams:
        if self.scenes is not None:
            if not self.scenes:
                raise ValueError("scenes is an empty list; use null for the single-scene form")
            seen: dict[str, int] = {}
            for i, item in enumerate(self.scenes):
                if item.scene_id in seen:
                    raise ValueError(
                        f"scenes {seen[item.scene_id]} and {i} share the id {item.scene_id!r}; "
                        "set a distinct 'id' on one of them"
                    )
                seen[item.scene_id] = i
        return self

    def scene_list(self) -> list[SceneParams]:
        """The scenes to ingest: ``scenes``, or the single scene the top-level keys describe."""
        if self.scenes is not None:
            return list(self.scenes)
        keys = SceneParams.model_fields
        return [SceneParams.model_validate({k: getattr(self, k) for k in keys})]
