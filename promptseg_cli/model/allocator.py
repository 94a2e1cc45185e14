"""Keep freed tensor memory for reuse instead of handing it back to the kernel after every forward pass.

glibc's ``malloc`` serves large blocks (above 32 MB at most, by default) with ``mmap`` and unmaps them on
``free``. A tile's activations are tens of MB each, so every forward pass on the CPU maps them afresh and the
kernel zeroes every page again: about a sixth of the pipeline's CPU time went to that (system time). Raising
the mmap threshold keeps those blocks in the heap, and raising the trim threshold keeps the heap from being
returned and re-faulted; the process holds on to about one forward pass's worth of memory in exchange.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

#: ``mallopt`` parameters (glibc ``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 512 * 2**20
TRIM_THRESHOLD = 1024 * 2**20

_done = False


def reuse_freed_memory() -> bool:
    """Tune glibc's allocator once per process; True when it applied (glibc), False elsewhere."""
    global _done
    if _done:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _done = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
