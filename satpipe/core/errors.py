"""Errors raised by the satpipe library.

Every failure the library knows about is a :class:`SatpipeError`. Subclasses say what kind of
failure it was, and several also inherit from the matching built-in (``OSError`` for I/O,
``ValueError`` for bad values) so that callers who do not know this package can still catch them.
Messages name the offending file or key, the value found and what was expected; entry points
(stages, the REST service) print or return ``str(exc)`` and never a traceback.
"""


class SatpipeError(Exception):
    """Root of every error this package raises on purpose."""


class ParamsError(SatpipeError, ValueError):
    """A ``params.yaml`` key is unknown, missing or out of range."""


class SceneError(SatpipeError, ValueError):
    """An input scene is not something the pipeline can use."""


class NotGeoTIFFError(SceneError):
    """The input is not a GeoTIFF (judged by the GDAL driver, not the extension)."""


class GeoreferencingError(SceneError):
    """The scene has no CRS, no usable geotransform, or a rotated or sheared one."""


class UnsupportedDtypeError(SceneError):
    """The scene's pixel type is not one the pipeline handles."""


class EmptySceneError(SceneError):
    """The scene has no valid pixel at all."""


class AcquisitionTimeError(SceneError):
    """No acquisition time in the scene's tags and none given in params."""


class LabelError(SceneError):
    """A scene's label raster or its class mapping cannot be used."""


class RasterReadError(SatpipeError, OSError):
    """Pixel data could not be read (truncated or corrupt file)."""


class DownloadError(SatpipeError, OSError):
    """A remote scene could not be downloaded."""


class NoRangeSupportError(DownloadError):
    """A server ignores HTTP range requests, so a file there cannot be read in place."""


class ChecksumError(SatpipeError, ValueError):
    """A file's sha256 is not the one expected."""


class TilingError(SatpipeError, ValueError):
    """A scene cannot be cut into tiles with the requested size (or none survive)."""


class TileError(SatpipeError, ValueError):
    """A tile cannot be classified: unreadable, wrong shape, or no valid pixel."""


class ModelError(SatpipeError, ValueError):
    """A model file is malformed, or training has nothing to fit on."""


class InferenceError(SatpipeError):
    """Batch inference failed on more tiles than allowed."""


class LockfileError(SatpipeError, ValueError):
    """``dvc.lock`` is missing, malformed, or does not pin what is needed."""


class EngineError(SatpipeError, RuntimeError):
    """The engine cannot run tasks: no scheduler at the address, unusable or lost workers."""
