"""Pack the training datasets for a machine that receives at most 64 MiB with the repository (the lent GPU
machines of MODEL_CARD.md, "Training on a GPU machine"), and fetch the wheel of shapely that its Python lacks.

Each dataset folder is copied by ``promptseg_cli.training.datasets.pack_dataset``: it trains and validates on the
same pixels as the original at ``--native-mpp``. Writes ``OUT/data/<dataset>/`` and ``OUT/wheels/``.

Usage: python tools/pack_training_data.py ../shared/data/dsb2018 ../shared/data/monuseg ../shared/data/cpm15 \
           [--native-mpp 0.35] [-o .device]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

from promptseg_cli.training.datasets import pack_dataset

#: Wheels for the GPU machines' Python (3.12, x86-64 Linux), at the versions installed here; their image has the
#: other packages training needs (torch, numpy, scipy, scikit-image, tifffile, Pillow, rich, typer).
WHEELS = [f"shapely=={importlib.metadata.version('shapely')}"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("datasets", type=Path, nargs="+")
    parser.add_argument("--native-mpp", type=float, default=0.35)
    parser.add_argument("-o", "--output", type=Path, default=Path(".device"))
    args = parser.parse_args()
    total = 0
    for folder in args.datasets:
        written = pack_dataset(folder, args.output / "data" / folder.name, args.native_mpp)
        print(f"{folder.name}: {written / 2**20:.1f} MiB", flush=True)
        total += written
    shutil.rmtree(args.output / "wheels", ignore_errors=True)  # one version of each, or the install there stops
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp",
                    *(f"--platform=manylinux_2_{n}_x86_64" for n in (17, 27, 28, 34)),
                    "-d", str(args.output / "wheels"), *WHEELS], check=True)
    total += sum(f.stat().st_size for f in (args.output / "wheels").iterdir())
    print(f"{args.output}: {total / 2**20:.1f} MiB in all")


if __name__ == "__main__":
    main()
