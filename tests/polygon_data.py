"""The class raster the polygon tests share, and helpers to write and check it.

61 columns by 47 rows (odd, so blocks of 5 and 7 rows end mid-feature), with three noisy
classes, nodata speckle, a one-pixel stripe of a fourth class through every block, a ring of one
class around another (a hole) and two pixels that touch only at a corner.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize
from scipy import ndimage

from satpipe.outputs.polygons import ClassPolygons

HEIGHT, WIDTH = 47, 61
CLASSES = ("water", "vegetation", "soil", "cloud")
UTM = CRS.from_epsg(32631)
UTM_GRID = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0)  # 100 m² pixels, about 3°E 54°N
DEGREES = CRS.from_epsg(4326)
DEGREE_GRID = Affine(0.001, 0.0, 3.0, 0.0, -0.001, 51.0)
STRIPE = 30  # column of the cloud stripe
FOUR = ndimage.generate_binary_structure(2, 1)


def _classes() -> np.ndarray:
    rng = np.random.default_rng(7)
    noise = ndimage.uniform_filter(rng.random((HEIGHT, WIDTH)), 3)
    arr = np.digitize(noise, np.quantile(noise, [0.33, 0.66])).astype(np.uint8)
    arr[rng.random((HEIGHT, WIDTH)) < 0.03] = 255
    arr[:, STRIPE] = 3
    arr[9:18, 39:48] = 0  # a water margin, so the ring touches nothing of its class
    arr[10:17, 40:47] = 1  # a vegetation ring ...
    arr[12:15, 42:45] = 2  # ... around soil: a hole
    arr[38:44, 2:9] = 0
    arr[40, 5] = arr[41, 6] = 3  # cloud pixels touching only at a corner
    return arr


ARRAY = _classes()


def components(arr: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Every 4-connected region: (class code, mask)."""
    found = []
    for code in range(len(CLASSES)):
        labels, count = ndimage.label(arr == code, structure=FOUR)
        found.extend((code, labels == i) for i in range(1, count + 1))
    return found


def rasterised(polygons: ClassPolygons, transform: Affine) -> np.ndarray:
    """The features burnt into the grid (255 where none)."""
    if not polygons.features:
        return np.full((HEIGHT, WIDTH), 255, np.uint8)
    shapes = [(f.geometry, f.code) for f in polygons.features]
    return rasterize(shapes, (HEIGHT, WIDTH), fill=255, transform=transform, dtype=np.uint8)


def write_raster(
    path: Path, arr: np.ndarray, crs: CRS | None, transform: Affine, **extra: object
) -> Path:
    """``arr`` (rows, columns or bands, rows, columns) as a GeoTIFF with nodata 255."""
    data = arr if arr.ndim == 3 else arr[None]
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0])
    profile.update(dtype=data.dtype, crs=crs, transform=transform, nodata=255, **extra)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path
