"""Process-wide settings of glibc's allocator for the model's large, short-lived buffers, and handing freed
memory back to the system. No effect without glibc."""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time

#: glibc ``mallopt`` parameters.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8

#: The settings of :func:`configure_allocator`: glibc's environment variable for each, its ``mallopt`` parameter
#: and value. One arena, no ``mmap`` for large blocks, no automatic trimming.
SETTINGS = {"MALLOC_ARENA_MAX": (M_ARENA_MAX, 1), "MALLOC_MMAP_MAX_": (M_MMAP_MAX, 0),
            "MALLOC_TRIM_THRESHOLD_": (M_TRIM_THRESHOLD, 2**31 - 1)}
#: Environment variables that leave a setting to the user: any of these set skips it.
_OVERRIDES = {"MALLOC_MMAP_MAX_": ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_")}

#: Resident size above which :class:`MemoryGuard` hands the heap's free pages back: the peak of a run, whatever the
#: slide's size, unless more than this is in use.
RELEASE_ABOVE = 1700 * 2**20
#: Resident size above which a slide's end hands the free pages back before the next slide: what a large slide
#: leaves goes back, while a folder of small images (0.45-0.56 GB each) keeps its pages for the next image instead
#: of having the kernel zero them again (1000 x 1000 px fields: 0.31-0.33 -> 0.28-0.29 s per image).
RELEASE_BETWEEN_SLIDES = 1024 * 2**20
#: Seconds between two looks of :class:`MemoryGuard` at the resident size when it is near the limit (the two model
#: streams' allocations grow it by about 10 MB in that time, by up to 110 MB in a burst).
GUARD_INTERVAL = 0.025
#: Further from the limit the guard looks less often: again once the process could have grown by the distance
#: to it, at ``GUARD_GROWTH`` bytes per second after a burst of ``GUARD_BURST``, and at least every
#: ``GUARD_LONGEST`` seconds. On a 100 Mpx slide the resident size grew by at most 134 MB in 0.1 s, 231 MB in 0.2 s
#: and 397 MB in 0.4 s (sampled every 5 ms).
GUARD_GROWTH, GUARD_BURST, GUARD_LONGEST = 2**30, 128 * 2**20, 0.25
#: Bytes per page of ``/proc/self/statm``.
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


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
    model's CPU time went to that. Kept in the heap, the pages are reused; :class:`MemoryGuard` bounds what
    the heap keeps. One arena, because a thread's own arena keeps what that thread freed. Must run before
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
        statm = os.open("/proc/self/statm", os.O_RDONLY)  # a quarter of the cost of open() and read() of a file object
        try:
            return int(os.read(statm, 256).split()[1]) * _PAGE
        finally:
            os.close(statm)
    except (OSError, ValueError, IndexError):
        return 0


def release_free_memory(above: int = 0, held: int | None = None) -> bool:
    """Return the heap's free pages to the system (``malloc_trim``) when the process holds more than ``above``
    bytes (``held``, when the caller has just read it); whether it did."""
    if _LIBC is None or (resident_bytes() if held is None else held) <= above:
        return False
    try:
        _LIBC.malloc_trim(0)
    except AttributeError:
        return False
    return True


class MemoryGuard:
    """A background thread that hands the heap's free pages back whenever the process holds more than ``above``
    bytes (looking every ``interval`` seconds); a context manager.

    The heap only shrinks from its top, and with reads, two model streams, post-processing and label writing
    interleaving their allocations in one arena its free memory is in pieces: on a 100 Mpx slide the heap
    spans 1.6-1.7 GB while at most 0.6 GB of it is in use. Its resident size creeps up towards that span as
    pieces are reused, and a tile's activations (0.3-0.4 GB, two tiles at once) come in bursts, so a check
    between tile batches let the peak overshoot a limit by up to 0.5 GB, more often the longer the run. Looking
    every few hundredths of a second keeps the peak at the limit; below it nothing is released, so pages the
    next tiles reuse are not zeroed again. When more than ``above`` is in use (released pages come straight
    back), the guard waits until the process has grown by another quarter of ``above``, or ``backoff``
    seconds, before releasing again. Far below the limit it looks less often (``GUARD_GROWTH``): each look
    costs the thread a wake-up, and a run of a partly-tissue slide spends most of its time a few hundred MB
    below the limit.
    """

    def __init__(self, above: int = RELEASE_ABOVE, interval: float = GUARD_INTERVAL, backoff: float = 10.0):
        self.above, self.interval, self.backoff = above, interval, backoff
        self.longest = max(interval, GUARD_LONGEST)
        self.looks = self.releases = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="memory-guard", daemon=True)

    def _watch(self) -> None:
        trigger, raised_at, wait = self.above, 0.0, self.interval
        while not self._stop.wait(wait):
            if trigger > self.above and time.monotonic() - raised_at > self.backoff:
                trigger = self.above
            held = resident_bytes()
            self.looks += 1
            if release_free_memory(above=trigger, held=held):
                self.releases += 1
                if (held := resident_bytes()) > self.above:  # in use: wait for more growth, or a while
                    trigger, raised_at = held + self.above // 4, time.monotonic()
            wait = min(self.longest, max(self.interval, (trigger - held - GUARD_BURST) / GUARD_GROWTH))

    def start(self) -> "MemoryGuard":
        if _LIBC is not None:
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()

    __enter__ = start

    def __exit__(self, *exc) -> None:
        self.stop()
