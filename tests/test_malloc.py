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
