"""What every ``promptseg`` command costs besides its work: starting Python, importing torch, dask and zarr, and
leaving the interpreter again.

Usage: python benchmarks/command_overhead.py [--repeat 5]
Prints, as medians over ``repeat`` fresh processes each, the wall and CPU (user + system) seconds of
``promptseg info`` and ``promptseg segment`` of a 64 x 64 image, of an ``ingest --once`` pass over an empty
inbox and of an ``ingest --once --reprocess-on-change`` pass over an inbox of 20 such images all done, and "exit": the seconds from the command's last exit handler to the end of its process (the interpreter's
own clean-up). For a small image, a cron pass or a job-array task of one slide, this is most of the time. The CPU
time moves less than the wall time with a shared machine's load. Run it with ``PYTHONPATH=<other checkout>`` to
time another version of the code.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

#: Runs a command as ``python -m promptseg_cli`` does, and prints the time when its last exit handler runs.
CHILD = """import atexit, runpy, sys, time
atexit.register(lambda: print(f"exit-handlers-done {time.time()!r}", file=sys.stderr))  # the first is run last
sys.argv = ["promptseg", *sys.argv[1:]]
runpy.run_module("promptseg_cli", run_name="__main__", alter_sys=True)
"""


def measure(arguments: list[str], folder: Path, repeat: int) -> tuple[float, float, float]:
    """Median wall, CPU and exit seconds of ``repeat`` runs of ``promptseg ARGUMENTS`` in ``folder`` (each must
    succeed; not in the repository, whose ``promptseg_cli`` would come before ``PYTHONPATH``'s)."""
    walls, cpus, exits = [], [], []
    for _ in range(repeat):
        before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CHILD, *arguments], check=True, capture_output=True, text=True,
                              cwd=folder)
        ended = time.time()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        walls.append(time.perf_counter() - started)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        handlers_done = next(line for line in done.stderr.splitlines() if line.startswith("exit-handlers-done"))
        exits.append(ended - float(handlers_done.split()[1]))
    return statistics.median(walls), statistics.median(cpus), statistics.median(exits)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "tiny.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(image)
        (Path(tmp) / "inbox").mkdir()
        done = Path(tmp) / "done"
        done.mkdir()
        for i in range(20):
            (done / f"field{i}.png").write_bytes(image.read_bytes())
        subprocess.run([sys.executable, "-m", "promptseg_cli", "ingest", str(done), "--once", "--quiet-seconds", "0",
                        "--output-dir", str(Path(tmp) / "done_out"), "-q"], check=True, cwd=tmp)
        commands = {
            "promptseg info": ["info", str(image)],
            "promptseg segment (64 x 64 px)": ["segment", str(image), "-q", "--overwrite"],
            "promptseg ingest --once (empty inbox)": ["ingest", str(Path(tmp) / "inbox"), "--once", "--output-dir",
                                                      str(Path(tmp) / "out"), "-q"],
            "promptseg ingest --once --reprocess-on-change (20 done)": [
                "ingest", str(done), "--once", "--reprocess-on-change", "--output-dir", str(Path(tmp) / "done_out"), "-q"],
        }
        for name, arguments in commands.items():
            wall, cpu, exit_seconds = measure(arguments, Path(tmp), args.repeat)
            print(f"{name:<58} {wall:.2f} s wall, {cpu:.2f} CPU-s, exit {exit_seconds:.2f} s", flush=True)


if __name__ == "__main__":
    main()
