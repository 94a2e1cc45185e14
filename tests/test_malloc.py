"""The command line's allocator settings: one glibc malloc arena, large blocks kept in the heap for reuse, and
free pages handed back above a resident-size limit, by a guard thread while slides run."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="glibc only")

ALLOCATE = """
import ctypes, sys, threading
import numpy as np
if sys.argv[1] == "configured":
    from promptseg_cli.malloc import configure_allocator
    configure_allocator()
barrier = threading.Barrier(4)
held = []
def work():
    barrier.wait()
    for _ in range(200):
        held.append(bytearray(4096))
    held.append(np.ones(64 * 2**20, np.uint8))  # a large block, as the network's activations are
threads = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
libc = ctypes.CDLL("libc.so.6")
libc.malloc_info(0, ctypes.c_void_p.in_dll(libc, "stdout"))
libc.fflush(None)
"""


def _malloc_info(mode: str) -> str:
    run = subprocess.run([sys.executable, "-c", ALLOCATE, mode], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_threads_share_one_arena_and_large_blocks_come_from_the_heap():
    def summary(info: str) -> tuple[int, int]:
        mapped_bytes = int(info.rsplit('<total type="mmap" ', 1)[1].split('size="')[1].split('"')[0])
        return info.count("<heap nr="), mapped_bytes // 2**20

    arenas, mapped_mb = summary(_malloc_info("configured"))
    assert arenas == 1 and mapped_mb < 64  # (a few blocks mapped while importing, before the settings)
    arenas, mapped_mb = summary(_malloc_info("default"))
    assert arenas > 1 and mapped_mb >= 4 * 64  # the test can tell: by default threads get arenas, large blocks maps


RELEASE = """
import sys
from promptseg_cli.malloc import release_free_memory, resident_bytes

chunks = [bytearray(64 * 1024) for _ in range(2000)]  # 128 MB of heap (below the mmap threshold)
pin = chunks[-1]  # the heap's top stays in use, so glibc cannot shrink the heap by itself
del chunks
before = resident_bytes()
release_free_memory(above=int(sys.argv[1]))
print(before // 2**20, resident_bytes() // 2**20)
"""


@pytest.mark.parametrize("above, released", [(0, True), (2**40, False)])
def test_release_free_memory_hands_freed_heap_pages_back_above_the_limit(above, released):
    run = subprocess.run([sys.executable, "-c", RELEASE, str(above)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    before, after = map(int, run.stdout.split())
    assert (before - after > 100) == released  # MB: the freed chunks below the pinned top are no longer resident


GUARD = """
import sys, time
from promptseg_cli.malloc import MemoryGuard, resident_bytes

limit_mb, live_mb, backoff = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
live = [bytearray(64 * 1024) for _ in range(live_mb * 16)]  # in use throughout
chunks = [bytearray(64 * 1024) for _ in range(2000)]  # 128 MB of heap, then freed
pin = chunks[-1]
del chunks
before = resident_bytes()
with MemoryGuard(above=before + limit_mb * 2**20, interval=0.01, backoff=backoff) as guard:
    time.sleep(0.5)
print(before // 2**20, resident_bytes() // 2**20, guard.releases)
"""


def _guarded(limit_mb: int, live_mb: int = 0, backoff: float = 10.0) -> tuple[int, int]:
    """Run GUARD with a limit ``limit_mb`` from the resident size after 128 MB were freed; returns (MB released,
    number of releases)."""
    run = subprocess.run([sys.executable, "-c", GUARD, str(limit_mb), str(live_mb), str(backoff)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    before, after, releases = map(int, run.stdout.split())
    return before - after, releases


def test_memory_guard_releases_free_pages_once_the_process_holds_more_than_its_limit():
    released, releases = _guarded(limit_mb=-64)
    assert released > 100 and releases == 1  # back under the limit after one release
    released, releases = _guarded(limit_mb=64)
    assert released < 20 and releases == 0  # under the limit: freed pages stay for reuse


def test_memory_guard_backs_off_while_more_than_its_limit_is_in_use():
    # 256 MB in use, the limit 200 MB below what the process holds: a release cannot bring it under
    released, releases = _guarded(limit_mb=-200, live_mb=256)
    assert released > 100 and releases == 1  # then it waits for growth or the backoff time (10 s)
    released, releases = _guarded(limit_mb=-200, live_mb=256, backoff=0.1)
    assert 2 <= releases <= 6  # one release per backoff period, not one every look (0.01 s)


LOOKS = """
import sys, time
from promptseg_cli.malloc import MemoryGuard, resident_bytes

with MemoryGuard(above=resident_bytes() + int(sys.argv[1]) * 2**20, interval=0.01) as guard:
    time.sleep(1.0)
print(guard.looks, guard.releases)
"""


@pytest.mark.parametrize("headroom_mb, fewest, most", [(1024, 2, 6), (64, 30, 110)])
def test_memory_guard_looks_less_often_far_below_its_limit(headroom_mb, fewest, most):
    run = subprocess.run([sys.executable, "-c", LOOKS, str(headroom_mb)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    looks, releases = map(int, run.stdout.split())
    # 1 GB below: every GUARD_LONGEST (0.25 s); within a burst of the limit: every interval (0.01 s)
    assert fewest <= looks <= most and releases == 0
