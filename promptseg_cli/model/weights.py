"""Saving and loading model files: weights plus everything needed to use them correctly.

A model file holds the architecture config, the state dict and metadata: prompt vocabulary, native pixel size
(microns per pixel), inference defaults, a summary of the training data and the model version. The default
model ships inside the package (``promptseg_cli/model/default_model.pt``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from . import DEFAULT_MODEL
from .network import CPNConfig, PromptedCPN
from .prompts import CANONICAL_PROMPTS, SYNONYMS

#: The training data summary's name for the two-channel tissue simulator (``training/simulate.py``).
SIMULATED_DATASET = "simulated two-channel tissue"

FORMAT = "promptseg-cpn/1"


class ModelFileError(ValueError):
    """A model file that is missing, unreadable or not a promptseg model."""


@dataclass
class LoadedModel:
    network: PromptedCPN
    metadata: dict
    path: Path

    @property
    def native_mpp(self) -> float:
        return float(self.metadata["native_mpp"])

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "unknown"))

    @property
    def score_threshold(self) -> float:
        return float(self.metadata.get("score_threshold", 0.5))

    @property
    def nms_threshold(self) -> float:
        return float(self.metadata.get("nms_threshold", 0.3))

    def learned_from_fluorescence_only(self, prompt: str) -> bool:
        """Whether every training set that taught ``prompt`` (this model's and those of the models it was
        fine-tuned from) was fluorescence: the simulated two-channel tissue, or images all of kind
        ``fluorescence``. A set without kinds may be anything, so it does not count as fluorescence."""
        taught, training = [], self.metadata.get("training")
        while training:
            taught += [d for d in training.get("data", []) if prompt in str(d.get("prompt", "")).split("+")]
            training = (training.get("init") or {}).get("training")
        return bool(taught) and all(d.get("dataset") == SIMULATED_DATASET or d.get("kinds") == ["fluorescence"]
                                    for d in taught)


def save_model(path: Path, network: PromptedCPN, metadata: dict) -> None:
    """Write a model file atomically."""
    meta = {"prompts": list(CANONICAL_PROMPTS), "synonyms": {k: list(v) for k, v in SYNONYMS.items()}, **metadata}
    payload = {"format": FORMAT, "config": network.config.to_dict(), "state_dict": network.state_dict(), "metadata": meta}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_model(path: Path | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model file (the shipped default when ``path`` is None) in eval mode."""
    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise ModelFileError(f"{path}: not a readable model file ({exc.__class__.__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a promptseg model file (expected format {FORMAT})")
    network = PromptedCPN(CPNConfig.from_dict(payload["config"]))
    network.load_state_dict(payload["state_dict"])
    network.eval().to(device)
    return LoadedModel(network=network, metadata=payload["metadata"], path=path)
