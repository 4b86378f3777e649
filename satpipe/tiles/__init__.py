"""Tiles: fixed-size georeferenced windows cut from scenes, their packs, index and features.

The grid arithmetic, the tiler that cuts a scene window by window, the per-scene ZIP packs that
store the tiles, the tile index that lists every tile with its hash, and the feature vector
measured on a tile's pixels (the one function tiling, batch inference and the service share).
"""
