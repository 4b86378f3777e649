"""Classes: the names the model assigns to tiles, in a fixed order.

A tile is ``dark`` (water, vegetation, bare soil) or ``bright`` (cloud, thin cirrus, snow). The
order matters: the last class is the one a threshold calls positive (feature above the
threshold), and class maps store a class as its position in this tuple plus one. Label rasters
are mapped onto these names (``ingest.labels.classes``), so a mapping that names another class
is refused.
"""

CLASSES: tuple[str, ...] = ("dark", "bright")
