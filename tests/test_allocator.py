"""The allocator tuning that keeps freed tensor memory for the next forward pass (glibc only)."""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

KEPT_AFTER_FREE = """
import sys
import numpy as np

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

if sys.argv[1] == "tuned":
    from promptseg_cli.model.allocator import reuse_freed_memory
    assert reuse_freed_memory()
before = rss_mb()
block = np.ones(96 * 2**20, np.uint8)  # 96 MB: above glibc's largest default mmap threshold (32 MB)
del block
print(rss_mb() - before)
"""


def _kept_mb(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", KEPT_AFTER_FREE, mode], capture_output=True, text=True, check=True)
    return float(out.stdout)


def test_freed_blocks_stay_in_the_heap_for_the_next_forward_pass():
    assert _kept_mb("default") < 16  # glibc unmapped the block: the next one is faulted in afresh
    assert _kept_mb("tuned") > 80  # kept for reuse
