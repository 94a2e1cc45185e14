"""The training loop: multi-source crops, AdamW with warm-up + cosine decay, resumable checkpoints, loss log."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import __version__
from ..model.network import CPNConfig, PromptedCPN
from ..model.prompts import resolve_prompt
from ..model.predictor import Predictor
from ..model.weights import SIMULATED_DATASET, LoadedModel, load_model, save_model
from ..model.widen import widen
from ..progress import Reporter
from .datasets import load_samples
from .loss import CONTOUR_PIXELS, cpn_loss
from .sampling import CropSampler, Source
from .tune import tune_thresholds


@dataclass
class DataSpec:
    """A dataset folder, the prompt its labels answer, and its sampling weight (``PATH:PROMPT[:WEIGHT]``)."""

    path: Path
    prompt: str
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "DataSpec":
        parts = text.rsplit(":", 2)
        if len(parts) == 3:
            try:
                return cls(Path(parts[0]), resolve_prompt(parts[1], use_embedding=False), float(parts[2]))
            except ValueError:
                parts = text.rsplit(":", 1)
        if len(parts) < 2:
            raise ValueError(f"{text}: expected PATH:PROMPT[:WEIGHT]")
        return cls(Path(parts[0]), resolve_prompt(parts[1], use_embedding=False))


@dataclass
class TrainConfig:
    data: list[DataSpec]
    output: Path
    simulate_weight: float = 0.25
    steps: int = 3000
    batch_size: int = 8
    crop: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    native_mpp: float = 0.5
    seed: int = 0
    device: str = "cpu"
    workers: int = 1
    checkpoint_every: int = 100
    init: Path | None = None
    stain_jitter: float = 0.5
    affine: float = 0.0  # share of dataset crops turned by any angle, stretched and sheared
    contour_weight: float = 0.1
    area_weight: float = 0.0
    gap_weight: float = 0.0
    contour_pixels: int = CONTOUR_PIXELS
    frozen_norm: bool = False
    width: float = 1.0  # channels times this, of the default architecture or of the --init model
    minutes: float | None = None  # fit ``steps`` to this much training time, from the speed of the warm-up steps


def _atomic_save(obj: dict, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _trim_log(path: Path, step: int) -> None:
    """Drop loss records after ``step`` (written after the last checkpoint of an interrupted run)."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(f"{line}\n" for line in lines))


def _schedule(cfg: TrainConfig):
    def factor(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def data_summary(sources: list[Source], simulate_weight: float) -> list[dict]:
    summary = [
        {"dataset": s.name, "prompt": s.prompt, "weight": s.weight, "images": len(s.samples),
         "objects": int(sum(int(x.label.max()) for x in s.samples)), "kinds": sorted({x.kind for x in s.samples})}
        for s in sources
    ]
    summary.append({"dataset": SIMULATED_DATASET, "prompt": "nuclei+cells", "weight": simulate_weight})
    return summary


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random stream of one training step's loss (which object pixels it scores), fixed by ``(seed, step)``
    alone: like the step's crops, it does not depend on what drew random numbers before (network construction,
    earlier steps, a resume)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))


def _init_summary(init: LoadedModel | None) -> dict | None:
    """Version and training record of the model a fine-tuning run started from."""
    if init is None:
        return None
    return {"version": init.version, "training": init.metadata.get("training")}


def train(cfg: TrainConfig, reporter: Reporter) -> Path:
    """Train (or resume) into ``cfg.output``; returns the exported model file.

    With ``cfg.minutes`` the warm-up steps run first and are timed; the total number of steps is then set so that
    training (this invocation's steps, not loading data or choosing thresholds) takes about that long. The warm-up's
    learning rates do not depend on the total, so the run is the one ``steps`` set to that total gives; the model
    and checkpoint record it, and a run resumed after its warm-up keeps it.
    """
    cfg = replace(cfg)  # the caller's configuration stays as given
    cfg.output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    sources = []
    for spec in cfg.data:
        samples = load_samples(spec.path, cfg.native_mpp, split="train")
        if not samples:
            raise ValueError(f"{spec.path}: no training images")
        sources.append(Source(spec.path.name, samples, spec.prompt, spec.weight))
        reporter.log(f"{spec.path.name}: {len(samples)} training images for prompt '{spec.prompt}'")

    init = load_model(cfg.init) if cfg.init is not None else None
    config = (init.network.config if init is not None else CPNConfig()).widened(cfg.width)
    network = (widen(init.network, config) if init is not None else PromptedCPN(config)).to(device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(cfg))
    checkpoint = cfg.output / "checkpoint.pt"
    step = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        try:
            network.load_state_dict(state["network"])
        except RuntimeError:
            raise ValueError(f"{checkpoint}: made by a network of another size; resume with the --width (or --init) "
                             "the run started with") from None
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        if cfg.minutes is not None and step >= cfg.warmup:
            cfg.steps = state["config"]["steps"]  # fitted when the run passed its warm-up
        _trim_log(cfg.output / "losses.jsonl", step)
        reporter.log(f"resumed from {checkpoint} at step {step}")
    elif init is not None:
        reporter.log(f"fine-tuning from {cfg.init}" + (f", widened {cfg.width}x" if config != init.network.config else ""))

    sampler = CropSampler(sources, cfg.simulate_weight, cfg.crop, config.order, seed=cfg.seed,
                          stain_jitter=cfg.stain_jitter, batch_size=cfg.batch_size, start=step, affine=cfg.affine)
    loader = DataLoader(sampler, batch_size=None, num_workers=cfg.workers, persistent_workers=cfg.workers > 0)
    metadata = {
        "version": f"{__version__}+{cfg.output.name}",
        "native_mpp": cfg.native_mpp,
        "training": {"steps": cfg.steps, "batch_size": cfg.batch_size, "crop": cfg.crop, "lr": cfg.lr,
                     "seed": cfg.seed, "stain_jitter": cfg.stain_jitter, "affine": cfg.affine, "contour_weight": cfg.contour_weight,
                     "area_weight": cfg.area_weight, "gap_weight": cfg.gap_weight,
                     "contour_pixels": cfg.contour_pixels,
                     "frozen_norm": cfg.frozen_norm, "width": cfg.width, "minutes": cfg.minutes,
                     "data": data_summary(sources, cfg.simulate_weight),
                     "init": _init_summary(init)},
    }
    exported = cfg.output / "model.pt"
    network.train()
    if cfg.frozen_norm:  # normalise with the running statistics, as tiles are at inference, and leave them as they are
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
    batches = iter(loader)
    started = time.time()

    def run(until: int, log, advance) -> None:
        """Train up to step ``until``: step k trains on the loader's k-th batch."""
        nonlocal step
        while step < until:
            batch = {k: v.to(device) for k, v in next(batches).items()}
            output = network(batch["image"], batch["prompt"])
            losses = cpn_loss(output, batch, config, cfg.contour_weight, cfg.area_weight, cfg.gap_weight,
                              generator=step_generator(cfg.seed, step), contour_pixels=cfg.contour_pixels)
            optimiser.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 5.0)
            optimiser.step()
            scheduler.step()
            step += 1
            record = {"step": step, "lr": scheduler.get_last_lr()[0], "elapsed_s": round(time.time() - started, 1),
                      **{k: round(float(v.detach()), 5) for k, v in losses.items()}}
            log.write(json.dumps(record) + "\n")
            advance(1, f"loss {record['loss']:.3f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                log.flush()
                _atomic_save({"network": network.state_dict(), "optimiser": optimiser.state_dict(),
                              "scheduler": scheduler.state_dict(), "step": step,
                              "config": json.loads(json.dumps(asdict(cfg), default=str))}, checkpoint)
                save_model(exported, network, {**metadata, "trained_steps": step})

    with open(cfg.output / "losses.jsonl", "a") as log:
        if cfg.minutes is not None and step < cfg.warmup:
            cfg.steps = cfg.warmup  # until fitted: checkpoints in the warm-up hold a schedule that is not final
            with reporter.task("warm-up", total=cfg.warmup, completed=step) as advance:
                run(step + max(1, (cfg.warmup - step) // 4), log, advance)  # the first steps start the loader
                timed_from, timed_step = time.time(), step
                run(cfg.warmup, log, advance)
            per_step = (time.time() - timed_from) / max(1, step - timed_step)
            cfg.steps = step + max(1, int((cfg.minutes * 60 - (time.time() - started)) / per_step))
            metadata["training"]["steps"] = cfg.steps
            unit = "minute" if cfg.minutes == 1 else "minutes"
            reporter.log(f"{cfg.steps} steps fit in {cfg.minutes:g} {unit} ({per_step:.3f} s per step)")
        with reporter.task("training", total=cfg.steps, completed=step) as advance:
            run(cfg.steps, log, advance)
    reporter.log("choosing score and NMS thresholds on the validation split")
    network.eval()
    predictor = Predictor(load_model(exported, device), device)
    tuned = tune_thresholds(predictor, [(spec.path, spec.prompt) for spec in cfg.data], cfg.native_mpp)
    reporter.log(f"thresholds: score {tuned['score_threshold']}, NMS {tuned['nms_threshold']} (objective {tuned['objective']})")
    save_model(exported, network, {**metadata, "trained_steps": step, "score_threshold": tuned["score_threshold"],
                                   "nms_threshold": tuned["nms_threshold"], "threshold_search": tuned})
    return exported
