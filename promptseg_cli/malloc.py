"""Process-wide settings of glibc's allocator for the model's large, short-lived buffers, and handing freed
memory back to the system. No effect without glibc."""

from __future__ import annotations

import ctypes
import os
import sys

#: glibc ``mallopt`` parameters.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8

#: The settings of :func:`configure_allocator`: glibc's environment variable for each, its ``mallopt`` parameter
#: and value. One arena, no ``mmap`` for large blocks, no automatic trimming.
SETTINGS = {"MALLOC_ARENA_MAX": (M_ARENA_MAX, 1), "MALLOC_MMAP_MAX_": (M_MMAP_MAX, 0),
            "MALLOC_TRIM_THRESHOLD_": (M_TRIM_THRESHOLD, 2**31 - 1)}
#: Environment variables that leave a setting to the user: any of these set skips it.
_OVERRIDES = {"MALLOC_MMAP_MAX_": ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_")}

#: Resident size above which :func:`release_free_memory` hands the heap's free pages back: below the issue's 2 GB
#: bound with room for one tile batch's new allocations.
RELEASE_ABOVE = 1500 * 2**20


def _glibc() -> ctypes.CDLL | None:
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _glibc()


def configure_allocator() -> None:
    """Keep freed memory in one heap for reuse: one arena for all threads, large blocks from it rather than
    from ``mmap``, and no automatic trimming (each unless glibc's ``MALLOC_*`` environment variables for it are
    set: ``MALLOC_MMAP_MAX_=65536`` restores glibc's mapping of large blocks).

    Every tile's network activations are large blocks (tens to hundreds of MB). By default glibc maps each
    afresh and unmaps it when freed, so the kernel zeroes every page again at first touch: about a fifth of the
    model's CPU time went to that. Kept in the heap, the pages are reused; :func:`release_free_memory` bounds
    what the heap keeps. One arena, because a thread's own arena keeps what that thread freed. Must run before
    any other thread starts (torch's included): threads keep the arena they got.
    """
    if _LIBC is None:
        return
    for variable, (parameter, value) in SETTINGS.items():
        if not any(v in os.environ for v in _OVERRIDES.get(variable, (variable,))):
            try:
                _LIBC.mallopt(parameter, value)
            except AttributeError:
                return


def allocator_exports() -> list[str]:
    """Shell lines that give a process started by a job script (a dask worker) the settings of
    :func:`configure_allocator`."""
    return [f"export {variable}={value}" for variable, (_, value) in SETTINGS.items()]


def resident_bytes() -> int:
    """This process's resident memory (0 where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_free_memory(above: int = RELEASE_ABOVE) -> None:
    """Return the heap's free pages to the system (``malloc_trim``) when the process holds more than ``above``
    bytes.

    The heap only shrinks from its top, so with reads, two model streams and post-processing interleaving their
    allocations, its resident size creeps up to the worst mix seen so far. Called after every tile batch; below
    the limit it does nothing, so pages the next batch reuses are not zeroed again.
    """
    if _LIBC is not None and resident_bytes() > above:
        try:
            _LIBC.malloc_trim(0)
        except AttributeError:
            pass
