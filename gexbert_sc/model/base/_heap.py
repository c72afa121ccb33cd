"""Give freed heap memory back to the operating system between inference minibatches.

glibc raises its ``mmap`` threshold after the first large block (a densified minibatch) is
freed, so later blocks of that size come from the heap, which it rarely returns: embedding
100,000 samples × 20,000 genes grew the process by 1.4–3.4 GB although nothing is kept
across batches (``docs/performance.md``). ``malloc_trim(0)`` returns the free pages, as
dask's workers do. Elsewhere than glibc this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # musl or another libc without malloc_trim
        return None


def release_free_heap() -> None:
    """Return the process's free heap pages to the operating system (glibc only)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
