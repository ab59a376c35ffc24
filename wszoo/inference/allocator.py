"""Keeping freed CPU memory for the next forward instead of faulting it in again.

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc serves every block above
its mmap threshold (at most 32 MiB, and a detector at 800x1216 has dozens of such activations:
one 256-channel map at stride 4 is 62 MB) with a fresh ``mmap`` and returns it to the kernel on
``free``. The next forward maps it again and the kernel zeroes it page by page on first touch:
a Mask R-CNN R-50 forward at 800x1216 takes nearly a million page faults (about 4 GB of zeroed
pages) this way. Telling glibc to serve large blocks from its heap and to keep what is freed
(``mallopt``, https://man7.org/linux/man-pages/man3/mallopt.3.html) turns that into about
20,000, and the forward into 0.72x of its time; ``benchmarks/cpu_allocator.py`` measures it.
The price is that the process keeps its peak memory (14% more here) until it exits.

This is process-wide, so the library never does it on import: ``wszoo predict`` and
``wszoo eval`` do it when they run on the CPU (the process is theirs), and a program of yours
may call :func:`retain_freed_memory` itself. Setting ``MALLOC_MMAP_MAX_=0`` and
``MALLOC_TRIM_THRESHOLD_=<bytes>`` in the environment before Python starts does the same, and
preloading jemalloc or tcmalloc is the other common remedy.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Optional

__all__ = ["retain_freed_memory"]

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Largest trim threshold mallopt takes (an int): freed memory at the top of the heap is kept.
_KEEP_ALL = 2**31 - 1


@functools.lru_cache(maxsize=1)
def _glibc() -> Optional[ctypes.CDLL]:
    """The running glibc, or None on another C library (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):  # only glibc has both
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def retain_freed_memory() -> bool:
    """Makes this process's ``malloc`` reuse freed memory rather than map it afresh each time.

    Serves large blocks from the heap (no ``mmap``) and never trims the heap, so repeated
    forwards reuse the pages of the last one instead of faulting in zeroed ones. It affects the
    whole process from now on and cannot be undone; memory already freed is not affected.

    Returns:
        True if it was applied; False where the C library is not glibc (nothing is changed:
        preload jemalloc or tcmalloc there instead).
    """
    libc = _glibc()
    if libc is None:
        return False
    # mallopt returns 1 on success.
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_ALL))
