"""glibc allocator settings for processes that decode tiles in worker threads.

Every tile decoded allocates a handful of half-megabyte buffers (the file's bytes, GDAL's block
and the pixel array). glibc serves blocks that large with ``mmap`` unless its adaptive threshold
has grown past them, and it gives the top of a thread's arena back to the kernel as soon as a
little is free. The main thread's arena adapts; worker threads' arenas kept paying a fresh
``mmap``, page faults and ``munmap`` per buffer: :func:`satpipe.inference.predict.predict_file` cost
1.75 ms per 256x256x4 tile in a worker thread against 1.21 ms on the main thread, on the same
tiles (2-core VM). With the thresholds below both cost 1.19-1.24 ms.

:func:`tune_for_threads` fixes the mmap threshold at 4 MiB and lets up to 64 MiB stay free in
an arena before it is trimmed: memory is reused instead of returned and faulted in again. It
changes no result, only where freed memory waits. It is a no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Any

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 64 << 20

_done = False


def _mallopt() -> Any:
    """Glibc's ``mallopt``, typed for ctypes; None off Linux or off glibc (musl has none)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def tune_for_threads() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once); True if applied."""
    global _done
    if _done:
        return True
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    if not ok:
        log.debug("mallopt refused the thresholds; allocator left as is")
    _done = ok
    return ok


_streaming = False


def release_large_buffers() -> bool:
    """Fix glibc's mmap threshold at 4 MiB for a streaming process (once); True if applied.

    glibc raises its mmap threshold each time a large block is freed, after which blocks of
    that size come from the heap and stay with the process once freed. A whole-scene run
    allocates a few same-sized large arrays per batch (windows, scores, partial sums) in
    several threads, so its heap grew by about 100 MiB at 10980 x 10980 without a byte more in
    use. A fixed threshold hands every block of 4 MiB or more back to the kernel when freed.
    It changes no result. A no-op off glibc.
    """
    global _streaming
    if _streaming:
        return True
    mallopt = _mallopt()
    if mallopt is None:
        return False
    _streaming = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return _streaming
