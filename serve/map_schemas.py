"""Bodies of the map routes (pydantic models, shown in ``/docs``) and their path parameters.

Bounds are ``[west, south, east, north]`` in WGS84 degrees. Every body that depends on the model
names it (``model_version``, ``model_md5``); a layer's ``md5`` is its version (see
:mod:`serve.map_catalog`), the one tile URLs carry.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

LayerName = Literal["scene", "probability", "classes", "errors", "tiles"]
SCENE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"  # what ingest accepts as a scene id
MD5_PATTERN = r"^[0-9a-f]{32}$"
MAX_ZOOM = 24
MAX_LAT = 85.0511287798066  # the Web Mercator square's edge

# Lists, not tuples: a tuple's JSON schema (prefixItems) is not an OpenAPI 3.0 schema.
Bounds = Annotated[list[float], Field(min_length=4, max_length=4)]


class MapLayer(BaseModel):
    """A layer of a scene: its version and where its tiles are."""

    name: LayerName
    md5: str = Field(description="the layer's version: changes with any of its inputs")
    tiles: str = Field(description="tile URL template, relative to the service root")
    tilejson: str = Field(description="its TileJSON, relative to the service root")
    sources: dict[str, str] = Field(description="pinned files it is drawn from: path -> md5")


class SceneMap(BaseModel):
    """A scene with pinned outputs, and its layers from the bottom up."""

    id: str
    bounds: Bounds = Field(description="[west, south, east, north], WGS84 degrees")
    layers: list[MapLayer]


class MapsIndex(BaseModel):
    """``GET /maps``: every scene's layers, for the served model."""

    model_version: str
    model_md5: str
    scenes: list[SceneMap]
    notes: list[str] = Field(description="outputs left out, and why (e.g. from another model)")


class TileJSON(BaseModel):
    """TileJSON 3.0.0 of one layer (https://github.com/mapbox/tilejson-spec)."""

    tilejson: Literal["3.0.0"]
    name: str
    version: str = Field(description="the layer's md5")
    scheme: Literal["xyz"]
    tiles: list[str]
    minzoom: int = Field(ge=0, le=MAX_ZOOM)
    maxzoom: int = Field(ge=0, le=MAX_ZOOM)
    bounds: Bounds
    center: list[float] = Field(min_length=3, max_length=3, description="[lon, lat, zoom]")


class LegendEntry(BaseModel):
    """One colour of a legend: a class code (or error kind, or probability) and its colour."""

    value: int | float = Field(description="class code, error kind code, or probability 0..1")
    name: str
    colour: str = Field(pattern=r"^#[0-9a-f]{6}$")


class LayerLegend(BaseModel):
    """The legend of one layer: categories, or stops of a colour ramp."""

    layer: LayerName
    kind: Literal["categorical", "ramp"]
    entries: list[LegendEntry]


class Legend(BaseModel):
    """``GET /maps/{scene}/legend``: the legends of the scene's layers."""

    scene: str
    model_version: str
    model_md5: str
    layers: list[LayerLegend]


class TileWindow(BaseModel):
    """A tile's pixel window in its scene."""

    col_off: int
    row_off: int
    width: int
    height: int


class TileAtPoint(BaseModel):
    """The tile prediction under a point (the ``tiles`` layer), from the pinned predictions."""

    id: str
    prediction: str
    score: float
    features: dict[str, float]
    window: TileWindow


class PointInfo(BaseModel):
    """``GET /maps/{scene}/point``: what the scene's layers hold under a point."""

    scene: str
    lon: float
    lat: float
    inside: bool = Field(description="the point is on the scene's raster")
    row: int | None = Field(description="scene pixel row (null outside)")
    col: int | None = Field(description="scene pixel column (null outside)")
    class_code: int | None = Field(description="class raster code (null: none or nodata)")
    class_name: str | None
    probability: float | None = Field(description="the pixel's class probability, 0..1")
    tile: TileAtPoint | None = Field(description="the tile prediction there, if any")
    model_version: str
    model_md5: str
