"""Scenes: the input images, from every source, validated and described.

A scene arrives from a source (a local file, an HTTP URL read in place or downloaded, a STAC
item's assets, or the built-in synthetic generator), passes one validation gate, and is written
with its metadata, a preview and, when it has them, reference labels resampled onto its grid. A
new ingest source goes here.
"""
