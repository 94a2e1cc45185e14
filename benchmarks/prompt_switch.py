"""Does the prompt alone switch the model between nuclei and whole cells on the same pictures?

Writes a fixed set of simulated two-channel tissue images (seed 2026, never used in training, whose sampler
draws from other seeds) with both label sets, then scores every prompt against every label set.

Usage: python benchmarks/prompt_switch.py [--count 40] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from promptseg_cli.evaluation.evaluate import cpn_segmenter, evaluate
from promptseg_cli.model.predictor import Predictor
from promptseg_cli.model.weights import load_model
from promptseg_cli.training.simulate import write_simulated_dataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    predictor = Predictor(load_model(args.model))
    with tempfile.TemporaryDirectory() as tmp:
        folders = write_simulated_dataset(tmp, args.count, seed=2026)
        for prompt in ("nuclei", "cells"):
            for truth, folder in folders.items():
                r = evaluate(folder, cpn_segmenter(predictor, prompt))
                print(json.dumps({"prompt": prompt, "labels": truth, "ap@0.5": r["ap@0.5"], "ap@0.7": r["ap@0.7"],
                                  "pq@0.5": r["pq@0.5"], "n_true": r["n_true"], "n_pred": r["n_pred"]}))


if __name__ == "__main__":
    main()
