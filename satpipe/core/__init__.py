"""Foundations: what every other part of the library stands on, and which imports nothing above it.

The errors (one root, :class:`~satpipe.core.errors.SatpipeError`), the validated params of
``params.yaml``, the typed records that cross stage boundaries, byte-stable files and hashes,
logging, class names and colours, the thin raster I/O layer over rasterio, and the reading of what
``dvc.lock`` pins. A module here imports only other foundations, the standard library and
third-party packages.
"""
