"""The map routes: XYZ tiles, TileJSON, legends and point queries of the pinned outputs.

``GET /maps`` lists every scene's layers (:mod:`serve.map_catalog`) with their versions;
``/maps/{scene}/{layer}/{md5}/{z}/{x}/{y}.png`` is a 256-pixel Web Mercator PNG
(:mod:`satpipe.outputs.map_tiles`). A tile URL names its layer's version (``md5``), so its bytes
never change: it is sent with ``Cache-Control: public, max-age=31536000, immutable`` and a strong
``ETag``, and ``If-None-Match`` naming that ETag gets 304 without drawing anything. A version
that is no longer the layer's (the outputs or the model changed) is 404, naming the current one.

Tiles of the matrix outside the scene are fully transparent PNGs (200), not errors: map clients
ask for every tile in view. ``x`` or ``y`` beyond the zoom level's matrix (``2**z``) is 404.

API key: when ``SATPIPE_API_KEY`` is set, these routes and ``/viewer`` take it in the
``X-API-Key`` header or, because a browser cannot add headers to the images of a map, in the
``api_key`` query parameter (it then shows in access logs and browser history: serve maps to
people who may see the key, or put the service behind a proxy that adds the header).

Errors are ``{"detail": str}``: 401 (API key), 404 (no such scene, layer, version or tile),
422 (a parameter outside its documented pattern or range), 503 (no verified model, ``dvc.lock``
pins another model than the served one, or an output file is not the pinned one).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Security, params
from fastapi.responses import Response
from fastapi.security import APIKeyHeader, APIKeyQuery

from satpipe.outputs import map_tiles
from serve import map_layers
from serve.errors import AuthError
from serve.map_catalog import Catalog, MapNotFoundError, MapOutputs
from serve.map_schemas import (
    MAX_LAT,
    MAX_ZOOM,
    MD5_PATTERN,
    SCENE_ID_PATTERN,
    LayerName,
    Legend,
    MapLayer,
    MapsIndex,
    PointInfo,
    SceneMap,
    TileJSON,
)
from serve.outputs import PinnedFiles
from serve.routes import API_KEY_HEADER, Ready, ReadyDep
from serve.schemas import ErrorBody

CACHE_CONTROL = "public, max-age=31536000, immutable"
KEY_QUERY = "api_key"
_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="MapsKeyHeader",
    auto_error=False,
    description="on /maps and /viewer when SATPIPE_API_KEY is set (or the api_key query)",
)
_key_query = APIKeyQuery(
    name=KEY_QUERY,
    scheme_name="MapsKeyQuery",
    auto_error=False,
    description="the API key as a query parameter, for map clients that cannot send headers",
)


async def require_map_key(
    request: Request,
    header: Annotated[str | None, Security(_key_header)],
    query: Annotated[str | None, Security(_key_query)],
) -> None:
    """Check the key (header or ``api_key`` query) against ``SATPIPE_API_KEY``, if set."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    given = header if header is not None else query
    if given is None or not hmac.compare_digest(
        given.encode(), expected.get_secret_value().encode()
    ):
        raise AuthError(
            f"missing or wrong API key: send the {API_KEY_HEADER} header or the "
            f"{KEY_QUERY} query parameter"
        )


@dataclass(frozen=True)
class MapContext:
    """What a map route needs: the request's served model (``ready``) and the outputs."""

    ready: Ready
    outputs: MapOutputs

    @property
    def files(self) -> PinnedFiles:
        """The verifier of pinned files."""
        return self.outputs.files(self.ready.service)

    async def catalog(self) -> Catalog:
        """The catalog for the request's served model (built in a worker thread if needed)."""
        return await self.ready.offload(self.outputs.catalog, self.ready.service, self.ready.loaded)


async def get_map_context(request: Request, ready: ReadyDep) -> MapContext:
    """The served model taken once for the request (503 when none) and the map outputs."""
    return MapContext(ready, request.app.state.map_outputs)


MapDep = Annotated[MapContext, Depends(get_map_context)]
SceneId = Annotated[
    str, Path(pattern=SCENE_ID_PATTERN, description="scene id", examples=["synthetic-42"])
]
Layer = Annotated[LayerName, Path(description="layer name")]
Md5 = Annotated[str, Path(pattern=MD5_PATTERN, description="the layer's md5 (from /maps)")]
Zoom = Annotated[int, Path(ge=0, le=MAX_ZOOM, description="zoom level")]
Column = Annotated[int, Path(ge=0, le=2**MAX_ZOOM - 1, description="tile column, below 2**z")]
Row = Annotated[int, Path(ge=0, le=2**MAX_ZOOM - 1, description="tile row, below 2**z")]
Lon = Annotated[float, Query(ge=-180, le=180, description="longitude, WGS84 degrees")]
Lat = Annotated[float, Query(ge=-MAX_LAT, le=MAX_LAT, description="latitude, WGS84 degrees")]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


_CACHE_HEADERS = {
    "ETag": {"description": "the tile's version", "schema": {"type": "string"}},
    "Cache-Control": {"description": CACHE_CONTROL, "schema": {"type": "string"}},
    "X-Model-Version": {"description": "the served model's version", "schema": {"type": "string"}},
    "X-Model-MD5": {"description": "the served model's md5", "schema": {"type": "string"}},
}
_TILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        "description": "a 256x256 RGBA PNG (fully transparent outside the scene)",
        "headers": _CACHE_HEADERS,
    },
    304: {"description": "If-None-Match names this tile's ETag", "headers": _CACHE_HEADERS},
    **_errors(401, 404, 422, 503),
}

router = APIRouter(prefix="/maps", tags=["maps"])


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("", responses=_errors(401, 503))
async def maps_index(request: Request, ctx: MapDep) -> MapsIndex:
    """Every scene with pinned outputs, its layers, their versions and tile URLs."""
    cat = await ctx.catalog()
    root = _root(request)
    scenes = []
    for scene in cat.scenes.values():
        layers = []
        for layer in scene.layers.values():
            base = f"{root}/maps/{scene.id}/{layer.name}"
            layers.append(
                MapLayer(
                    name=layer.name,
                    md5=layer.md5,
                    tiles=f"{base}/{layer.md5}/{{z}}/{{x}}/{{y}}.png",
                    tilejson=f"{base}/tilejson.json",
                    sources={f.path: f.md5 for f in layer.sources},
                )
            )
        scenes.append(SceneMap(id=scene.id, bounds=list(scene.bounds), layers=layers))
    m = ctx.ready.loaded
    return MapsIndex(model_version=m.model.version, model_md5=m.md5, scenes=scenes, notes=cat.notes)


@router.get("/{scene}/legend", responses=_errors(401, 404, 422, 503))
async def legend(scene: SceneId, ctx: MapDep) -> Legend:
    """The legends of the scene's layers, from the model's class declaration."""
    cat = await ctx.catalog()
    found = cat.scene(scene)
    m = ctx.ready.loaded
    layers = map_layers.legends(cat, found)
    return Legend.model_validate(
        {"scene": scene, "model_version": m.model.version, "model_md5": m.md5, "layers": layers}
    )


@router.get("/{scene}/point", responses=_errors(401, 404, 422, 503))
async def point(scene: SceneId, lon: Lon, lat: Lat, ctx: MapDep) -> PointInfo:
    """The scene's pixel under a point: its class and probability, and the tile there."""
    cat = await ctx.catalog()
    found = cat.scene(scene)
    info = await ctx.ready.offload(map_layers.point, cat, ctx.files, found, lon, lat)
    m = ctx.ready.loaded
    info.update(scene=scene, lon=lon, lat=lat, model_version=m.model.version, model_md5=m.md5)
    return PointInfo.model_validate(info)


@router.get("/{scene}/{layer}/tilejson.json", responses=_errors(401, 404, 422, 503))
async def tilejson(request: Request, scene: SceneId, layer: Layer, ctx: MapDep) -> TileJSON:
    """TileJSON 3.0.0 of a layer: its tile URL (with the current version), bounds, zooms."""
    cat = await ctx.catalog()
    found, lay = cat.scene(scene), cat.layer(scene, layer)
    url = str(request.base_url).rstrip("/")
    url += f"/maps/{scene}/{layer}/{lay.md5}/{{z}}/{{x}}/{{y}}.png"
    key = request.query_params.get(KEY_QUERY)
    if key is not None and request.app.state.settings.api_key is not None:
        url += f"?{KEY_QUERY}={key}"
    doc = await ctx.ready.offload(map_layers.tilejson, ctx.files, found, lay, url)
    return TileJSON.model_validate(doc)


def _matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


@router.get(
    "/{scene}/{layer}/{md5}/{z}/{x}/{y}.png", response_class=Response, responses=_TILE_RESPONSES
)
async def tile(
    scene: SceneId,
    layer: Layer,
    md5: Md5,
    z: Zoom,
    x: Column,
    y: Row,
    ctx: MapDep,
    if_none_match: Annotated[
        str | None, Header(description="ETags the client holds: 304 when one is this tile's")
    ] = None,
) -> Response:
    """Tile ``(z, x, y)`` of a layer at version ``md5``, as a PNG (immutable: see ETag)."""
    cat = await ctx.catalog()
    found, lay = cat.scene(scene), cat.layer(scene, layer)
    if md5 != lay.md5:
        raise MapNotFoundError(
            f"layer {layer!r} of scene {scene!r}: version {md5} is not served; the current "
            f"version is {lay.md5} (see /maps/{scene}/{layer}/tilejson.json)"
        )
    if not map_tiles.in_matrix(z, x, y):
        raise MapNotFoundError(f"tile {z}/{x}/{y}: no such tile; x and y must be below {2**z}")
    m = ctx.ready.loaded
    headers = {"ETag": f'"{lay.md5}-{z}-{x}-{y}"', "Cache-Control": CACHE_CONTROL}
    headers.update({"X-Model-Version": m.model.version, "X-Model-MD5": m.md5})
    if _matches(if_none_match, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    png = await ctx.ready.offload(map_layers.render, cat, ctx.files, found, lay, z, x, y)
    return Response(png, media_type="image/png", headers=headers)


def install(app: FastAPI, dependencies: Sequence[params.Depends]) -> None:
    """Add the map routes (with ``dependencies``: the API key check) and their state."""
    app.state.map_outputs = MapOutputs()
    app.include_router(router, dependencies=list(dependencies))
