"""satpipe: a reproducible tiling and inference pipeline for satellite scenes.

The package holds pure functions plus a thin raster I/O layer; the DVC stages in ``stages/`` and
the REST service in ``serve/`` are thin entry points around it.
"""

__version__ = "0.1.0"
