"""Run the CPN on RGB tiles and return the objects it finds as contours."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..limits import PRECISION_NAMES, check_precision
from .contours import propose
from .network import STRIDE_MULTIPLE, CPNOutput, TracedCPN, fused_for_inference, mid_intensity, normalise_image_
from .nms import polygon_nms, polygons_from_contours
from .prompts import prompt_index
from .weights import LoadedModel


@dataclass
class Detections:
    """Objects of one tile: contours ``(N, P, 2)`` as ``(x, y)`` in tile pixels, scores and anchor points.

    ``intensities`` (per-object mean channel values) is filled in by the pipeline, next to the pixels.
    """

    contours: np.ndarray
    scores: np.ndarray
    anchors: np.ndarray
    intensities: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index: np.ndarray) -> "Detections":
        values = None if self.intensities is None else self.intensities[index]
        return Detections(self.contours[index], self.scores[index], self.anchors[index], values)

    def shifted(self, dx: float, dy: float, scale: float = 1.0) -> "Detections":
        """Translate by ``(dx, dy)`` then scale (both in the pixel-corner convention)."""
        shift = np.array([dx, dy], np.float32)
        return Detections((self.contours + shift) * scale, self.scores, (self.anchors + shift) * scale, self.intensities)

    @classmethod
    def empty(cls, n_points: int) -> "Detections":
        return cls(np.zeros((0, n_points, 2), np.float32), np.zeros(0, np.float32), np.zeros((0, 2), np.float32))


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` are checked against
    what this machine has (ValueError with a one-line message)."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {name}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} was asked for but no CUDA GPU is available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), 0 to "
                         f"{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not mps:
        raise ValueError(f"--device {name} was asked for but no Apple GPU (MPS) is available")
    return device


#: Network precision: fp32, or mixed precision (autocast) in bf16/fp16 for GPUs; bf16 also on CPUs that have
#: bfloat16 arithmetic (AVX512-BF16, AMX).
PRECISIONS = dict(zip(PRECISION_NAMES, (None, torch.bfloat16, torch.float16)))
#: CPU flags (``/proc/cpuinfo``) of bfloat16 arithmetic.
BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux); None where that cannot be read."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def resolve_precision(name: str, device: torch.device, flags: set[str] | None) -> str:
    """``name``, or for ``auto`` the fastest precision ``device`` runs natively: bf16 on a CUDA GPU that has it
    (fp16 on older ones) and on a CPU with bfloat16 arithmetic (feature ``flags``), fp32 elsewhere."""
    check_precision(name)
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device.type == "cpu" and flags and flags & BF16_CPU_FLAGS else "fp32"


def cpu_precision_warning(precision: str, flags: set[str] | None) -> str | None:
    """Why ``precision`` would run slowly on a CPU with feature ``flags`` (None: unknown), or None."""
    if precision == "fp16":
        return ("--precision fp16 is emulated on a CPU and several times slower than fp32; use fp32, or bf16 on CPUs "
                "with AVX512-BF16 or AMX")
    if precision == "bf16" and flags is not None and not flags & BF16_CPU_FLAGS:
        return ("--precision bf16: this CPU has no bfloat16 arithmetic (AVX512-BF16 or AMX), so it is emulated and "
                "slower than fp32")
    return None


class Predictor:
    """A loaded model plus thresholds; turns uint8 tiles into per-prompt detections."""

    def __init__(self, model: LoadedModel, device: torch.device | str = "cpu", score_threshold: float | None = None,
                 nms_threshold: float | None = None, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision}")
        self.precision = precision
        self.model = model
        self.device = torch.device(device)
        self.network = fused_for_inference(model.network).to(self.device)
        if self.device.type == "cpu" and precision == "fp32" and hasattr(torch.jit, "trace"):
            self.network = TracedCPN(self.network)  # runs without Python's lock, beside the pipeline's threads
        self.score_threshold = model.score_threshold if score_threshold is None else score_threshold
        self.nms_threshold = model.nms_threshold if nms_threshold is None else nms_threshold

    def predict_image(self, image: np.ndarray, prompt: str, intensity: tuple[float, float], margin: int = 32) -> Detections:
        """Detections of a whole image in one pass, with the same border context tiles get from their halo.

        The image is surrounded by ``margin`` pixels of the mid intensity (what tiles read beyond a slide's edge
        and what training crops see beyond an image's edge) before it goes through the network.
        """
        padded = np.pad(image, ((margin, margin), (margin, margin), (0, 0)), constant_values=mid_intensity(intensity))
        return self.predict(padded[None], prompt, intensity)[0].shifted(-margin, -margin)

    def predict(self, tiles: np.ndarray, prompt: str, intensity: tuple[float, float]) -> list[Detections]:
        """Detections for each tile of ``tiles`` ``(B, H, W, 3)`` uint8, normalised with whole-image ``intensity``."""
        return self.postprocess(self.forward(tiles, prompt, intensity))

    @torch.inference_mode()
    def forward(self, tiles: np.ndarray, prompt: str, intensity: tuple[float, float]) -> CPNOutput:
        """The network's raw output for a batch of tiles (the expensive part)."""
        x = self.network_input(tiles, intensity)
        prompts = torch.full((len(tiles),), prompt_index(prompt), dtype=torch.long, device=self.device)
        dtype = PRECISIONS[self.precision]
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            output = self.network(x, prompts)
        if dtype is None:
            return output
        return output.to(torch.float32)

    def network_input(self, tiles: np.ndarray, intensity: tuple[float, float]) -> torch.Tensor:
        """Tiles ``(B, H, W, 3)`` uint8 as the network's normalised float input, zero-padded to a multiple of its
        stride, in one buffer filled in place. The buffer keeps the pixels' channel-last order (as a
        ``channels_last`` tensor): the convolutions run about a third faster in that layout on CPU."""
        b, h, w, c = tiles.shape
        pad_h, pad_w = -h % STRIDE_MULTIPLE, -w % STRIDE_MULTIPLE
        x = torch.empty((b, h + pad_h, w + pad_w, c), device=self.device).permute(0, 3, 1, 2)
        x[:, :, h:].zero_()
        x[:, :, :h, w:].zero_()
        pixels = x[:, :, :h, :w]
        if not (tiles.flags.c_contiguous and tiles.flags.writeable):  # what torch takes without a copy (and a warning)
            tiles = np.array(tiles)
        pixels.copy_(torch.from_numpy(tiles).permute(0, 3, 1, 2))
        normalise_image_(pixels, *intensity)
        return x

    @torch.inference_mode()
    def postprocess(self, output: CPNOutput) -> list[Detections]:
        """Candidates, contours, refinement and NMS from the network's output; one :class:`Detections` per tile."""
        results = []
        for candidates in propose(output, self.network.config, self.score_threshold):
            det = Detections(candidates["contours"].float().cpu().numpy(), candidates["scores"].float().cpu().numpy(),
                             candidates["anchors"].float().cpu().numpy())
            results.append(self.suppress(det))
        return results

    def suppress(self, det: Detections) -> Detections:
        if len(det) == 0:
            return det
        polygons = polygons_from_contours(det.contours.astype(np.float64))
        return det.take(polygon_nms(polygons, det.scores, self.nms_threshold))
