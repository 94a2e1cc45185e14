"""The command line makes all threads share one glibc malloc arena."""

import subprocess
import sys

import pytest

SCRIPT = """
import ctypes, sys, threading
if sys.argv[1] == "share":
    from promptseg_cli.malloc import share_one_arena
    share_one_arena()
barrier = threading.Barrier(4)
held = []
def work():
    barrier.wait()
    for _ in range(200):
        held.append(bytearray(4096))
threads = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
libc = ctypes.CDLL("libc.so.6")
libc.malloc_info(0, ctypes.c_void_p.in_dll(libc, "stdout"))
libc.fflush(None)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc only")
def test_threads_share_one_arena_after_the_setting():
    def arenas(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin"})
        assert run.returncode == 0, run.stderr
        return run.stdout.count("<heap nr=")

    assert arenas("share") == 1
    assert arenas("default") > 1  # the test can tell: without the setting, the threads get arenas of their own


RELEASE = """
from promptseg_cli.malloc import release_free_memory

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS:"))

chunks = [bytearray(64 * 1024) for _ in range(2000)]  # 128 MB of heap (below the mmap threshold)
pin = chunks[-1]  # the heap's top stays in use, so glibc cannot shrink the heap by itself
del chunks
before = rss_mb()
release_free_memory()
print(before, rss_mb())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc only")
def test_release_free_memory_hands_freed_heap_pages_back():
    run = subprocess.run([sys.executable, "-c", RELEASE], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    before, after = map(int, run.stdout.split())
    assert before - after > 100  # MB: the freed chunks below the pinned top are no longer resident
