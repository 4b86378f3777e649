"""satpipe: a reproducible tiling and inference pipeline for satellite scenes.

The library is split into rooms by concept, from the bottom up: ``core`` (foundations),
``engines``, ``scenes``, ``tiles``, ``models``, then ``inference``, ``evaluation`` and ``outputs``.
A room imports only rooms below it (the contracts in ``pyproject.toml``, checked by
``lint-imports``). The DVC stages in ``stages/`` and the REST service in ``serve/`` are thin entry
points around it; the library never imports them.
"""

__version__ = "0.1.0"
