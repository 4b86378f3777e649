"""Classes: the names a model assigns to tiles, in the model's order.

By default a tile is ``dark`` (water, vegetation, bare soil) or ``bright`` (cloud, thin cirrus,
snow): :data:`CLASSES`, the default of ``train.classes``. A model may declare other names
(``train.classes`` for the threshold and logistic kinds, ``train.onnx.classes`` for ONNX). The
order matters: the last class is the one a threshold calls positive (feature above the
threshold), and class maps store a class as its position in the model's tuple plus one. Label
rasters map their codes onto class names (``ingest.labels.classes``); a reference class the
model does not have is refused at training and at evaluation. Each class also has a display
colour, shared by the class maps and the quick-looks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from satpipe.core.errors import ModelError

CLASSES: tuple[str, ...] = ("dark", "bright")
MAX_CLASSES = 254  # class codes 1..254 in a uint8 map, 0 = nodata, 255 spare

# Display colours of the known classes; other names take the fallback palette, by class position.
PALETTE: dict[str, tuple[int, int, int]] = {
    "dark": (33, 102, 172),  # blue
    "bright": (253, 174, 97),  # light orange
}
FALLBACK_PALETTE: tuple[tuple[int, int, int], ...] = (
    (27, 158, 119),
    (217, 95, 2),
    (117, 112, 179),
    (102, 166, 30),
    (230, 171, 2),
    (166, 118, 29),
    (102, 102, 102),
)


def class_colour(name: str, index: int) -> tuple[int, int, int]:
    """Display colour of a class: from :data:`PALETTE`, else the fallback palette by position."""
    return PALETTE.get(name) or FALLBACK_PALETTE[index % len(FALLBACK_PALETTE)]


def class_codes(classes: Sequence[str]) -> dict[str, int]:
    """Each class's code in a class map: its position in ``classes`` plus one (0 is no data).

    Raises:
        ModelError: ``classes`` is empty, repeats a name, or has more than :data:`MAX_CLASSES`.
    """
    if not classes or len(set(classes)) != len(classes) or len(classes) > MAX_CLASSES:
        raise ModelError(
            f"classes {list(classes)}: expected 1 to {MAX_CLASSES} distinct class names"
        )
    return {name: i + 1 for i, name in enumerate(classes)}


def code_of(prediction: str, codes: dict[str, int], tile: str) -> int:
    """The class-map code of ``prediction`` (see :func:`class_codes`).

    Raises:
        ModelError: ``prediction`` is not a class of the model, naming ``tile``.
    """
    if prediction not in codes:
        raise ModelError(
            f"tile {tile}: prediction {prediction!r} is not a class of the model; "
            f"expected one of {list(codes)}"
        )
    return codes[prediction]


_HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


def parse_colour(text: str) -> tuple[int, int, int]:
    """A ``#rrggbb`` colour (as ``train.pixels.classes`` declares them) as an RGB triple.

    Raises:
        ValueError: ``text`` is not ``#rrggbb``.
    """
    if not _HEX_COLOUR.match(text):
        raise ValueError(f"colour {text!r}: expected #rrggbb")
    return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)
