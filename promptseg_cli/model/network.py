"""The prompted Contour Proposal Network (CPN).

A small U-Net whose decoder features are modulated by a prompt embedding (FiLM: per-channel scale and
shift). Its heads run at stride 2 and predict, per output pixel, an objectness logit, the offset from that
pixel to the centre of the object it lies in, elliptical Fourier coefficients of that object's contour and a
2-channel refinement field that nudges contour points toward the object boundary.

Normalisation is BatchNorm only. In ``eval()`` mode BatchNorm uses frozen running statistics, so a tile's
output does not depend on the statistics of the tile's content: the same pixel gets the same prediction in
any tile that contains its receptive field, which is what makes tiled inference seamless.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .ops import matmul

#: Total downsampling of the encoder; inputs must be a multiple of it.
STRIDE_MULTIPLE = 16
#: Stride of the prediction heads relative to the input.
HEAD_STRIDE = 2


@dataclass(frozen=True)
class CPNConfig:
    """Architecture hyper-parameters, stored with the weights."""

    order: int = 8
    encoder: tuple[int, ...] = (32, 64, 96, 128)
    decoder: tuple[int, ...] = (96, 64, 32)
    n_prompts: int = 2
    prompt_dim: int = 32
    offset_scale: float = 8.0
    coeff_scale: float = 8.0
    refine_step: float = 2.0
    refine_iterations: int = 3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CPNConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def widened(self, width: float) -> "CPNConfig":
        """This architecture with every encoder and decoder block's channels times ``width`` (multiples of 8)."""
        if width <= 0:
            raise ValueError(f"width {width}: must be positive")

        def scale(channels: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(max(8, round(c * width / 8) * 8) for c in channels)

        return replace(self, encoder=scale(self.encoder), decoder=scale(self.decoder))


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class FiLM(nn.Module):
    """Feature-wise linear modulation of ``channels`` features by a prompt embedding."""

    def __init__(self, prompt_dim: int, channels: int):
        super().__init__()
        self.project = nn.Linear(prompt_dim, 2 * channels)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.project(prompt)[:, :, None, None].chunk(2, dim=1)
        if torch.is_grad_enabled():
            return x * (1 + gamma) + beta
        return x.mul_(1 + gamma).add_(beta)  # inference: in place, the same values without two more feature maps


class DecoderBlock(nn.Module):
    def __init__(self, c_in: int, c_skip: int, c_out: int, prompt_dim: int):
        super().__init__()
        self.conv = conv_bn_relu(c_in + c_skip, c_out)
        self.film = FiLM(prompt_dim, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        conv, *rest = self.conv  # convolution, BatchNorm (Identity once folded), ReLU
        y = upsampled_conv(x, skip, conv)
        for module in rest:
            y = module(y)
        return self.film(y, prompt)


#: ``_PHASE_TAPS[p, d, t]``: tap ``d`` of a 3x3 kernel row lands on tap ``t`` of the 2x2 kernel of output phase ``p``.
_PHASE_TAPS = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]],
                            [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])


def upsampled_conv(x: torch.Tensor, skip: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(cat(upsample2(x), skip))`` for a 3x3 ``conv`` with padding 1, without the upsampled map or the
    concatenation (``skip`` is twice ``x``'s size).

    A 3x3 convolution of a nearest-neighbour 2x upsampled map is, at each of the four output phases (row and
    column parity), a 2x2 convolution of the half-size map: the four run as one convolution of ``x`` with
    ``4 x c_out`` kernels, about half the multiply-adds of that share of the 3x3 convolution at full size; the
    skip features get a 3x3 convolution of their own. The same values up to float rounding, in training and
    inference alike.
    """
    b, c_in, h, w = x.shape
    if skip.shape[-2:] != (2 * h, 2 * w):
        raise ValueError(f"decoder input {h}x{w} is not half its skip features' size {tuple(skip.shape[-2:])}: "
                         f"inputs must be multiples of {STRIDE_MULTIPLE}")
    weight = conv.weight
    taps = _PHASE_TAPS.to(weight)
    phases = torch.einsum("pyt,qxs,oiyx->pqoits", taps, taps, weight[:, :c_in]).flatten(0, 2)
    out = F.conv2d(skip, weight[:, c_in:], conv.bias, padding=1)
    # phase (p, q) of output pixel (2i + p, 2j + q) reads rows i - 1 + p .. i + p of x: i + p .. of the padded x
    shifted = F.conv2d(x, phases, padding=1)
    c_out = out.shape[1]
    grid = out.view(b, c_out, h, 2, w, 2)
    for n, (p, q) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        grid[:, :, :, p, :, q] += shifted[:, n * c_out : (n + 1) * c_out, p : p + h, q : q + w]
    return out


@dataclass
class CPNOutput:
    """Raw predictions at head stride: objectness and the refinement field at every pixel; the centre offset and
    the contour's Fourier coefficients only where asked (:meth:`at`), from the head features, since only
    candidate pixels need them (computing them everywhere took about a tenth of a CPU forward pass)."""

    logits: torch.Tensor  # (B, 1, h, w)
    refine: torch.Tensor  # (B, 2, h, w), raw refinement field
    features: torch.Tensor  # (B, C, h, w), head features
    shape_weight: torch.Tensor  # (2 + 4 * order, C): offsets and coefficients from the features, scales applied
    shape_bias: torch.Tensor  # (2 + 4 * order,)

    def at(self, batch_index: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Offsets to the object centre ``(N, 2)`` and Fourier coefficients ``(N, 4, order)``, both in pixels of the
        input, at head pixels ``(batch_index, rows, cols)``."""
        shape = matmul(self.features[batch_index, :, rows, cols], self.shape_weight.t()) + self.shape_bias
        return shape[:, :2], shape[:, 2:].unflatten(1, (4, -1))

    def to(self, dtype: torch.dtype) -> "CPNOutput":
        return CPNOutput(*(t.to(dtype) for t in (self.logits, self.refine, self.features, self.shape_weight, self.shape_bias)))


class PromptedCPN(nn.Module):
    """U-Net backbone + FiLM prompt conditioning + CPN heads."""

    def __init__(self, config: CPNConfig = CPNConfig()):
        super().__init__()
        self.config = config
        enc = config.encoder
        self.prompt_embedding = nn.Embedding(config.n_prompts, config.prompt_dim)
        self.stem = nn.Sequential(conv_bn_relu(3, enc[0], stride=2), conv_bn_relu(enc[0], enc[0]))
        self.down = nn.ModuleList(
            nn.Sequential(conv_bn_relu(enc[i], enc[i + 1], stride=2), conv_bn_relu(enc[i + 1], enc[i + 1]))
            for i in range(len(enc) - 1)
        )
        self.bottleneck_film = FiLM(config.prompt_dim, enc[-1])
        skips = list(reversed(enc[:-1]))
        ins = [enc[-1], *config.decoder[:-1]]
        self.up = nn.ModuleList(
            DecoderBlock(c_in, c_skip, c_out, config.prompt_dim)
            for c_in, c_skip, c_out in zip(ins, skips, config.decoder)
        )
        n_out = 1 + 2 + 4 * config.order + 2
        self.head = nn.Sequential(conv_bn_relu(config.decoder[-1], config.decoder[-1]), nn.Conv2d(config.decoder[-1], n_out, 1))
        nn.init.constant_(self.head[-1].bias[:1], -2.0)

    def forward(self, image: torch.Tensor, prompt: torch.Tensor) -> CPNOutput:
        """``image`` (B, 3, H, W) normalised float, H and W multiples of 16; ``prompt`` (B,) indices."""
        embedding = self.prompt_embedding(prompt)
        features = [self.stem(image)]
        for block in self.down:
            features.append(block(features[-1]))
        x = self.bottleneck_film(features[-1], embedding)
        for block, skip in zip(self.up, reversed(features[:-1])):
            x = block(x, skip, embedding)
        features, final = self.head[0](x), self.head[1]  # final: 1x1 convolution to logit, offsets, coeffs, refine
        weight, bias, cfg = final.weight.flatten(1), final.bias, self.config
        dense = [0, -2, -1]  # the logit and the refinement field
        # as a matrix product over pixels: a 1x1 convolution takes another algorithm with one thread than with
        # several, and the results would differ in the last bits between a run and its dask workers
        b, c, h, w = features.shape
        pixels = features.permute(0, 2, 3, 1).reshape(-1, c)  # a view when channels-last, as at inference
        out = torch.addmm(bias[dense], pixels, weight[dense].t()).view(b, h, w, len(dense)).permute(0, 3, 1, 2)
        scales = torch.cat([torch.full((2,), cfg.offset_scale), torch.full((4 * cfg.order,), cfg.coeff_scale)]).to(weight)
        return CPNOutput(logits=out[:, :1], refine=out[:, 1:], features=features,
                         shape_weight=weight[1:-2] * scales[:, None], shape_bias=bias[1:-2] * scales)


def fused_for_inference(network: PromptedCPN) -> PromptedCPN:
    """A copy of ``network`` for inference with every BatchNorm folded into the convolution before it.

    Same outputs up to float rounding (BatchNorm at inference is a fixed per-channel affine map), one pass less over
    each feature map: up to about 1.4 times faster on CPU, where these large activations are memory-bound.
    """
    fused = copy.deepcopy(network).eval()
    for module in fused.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
    return fused


class TracedCPN(nn.Module):
    """An inference network recorded as a TorchScript graph (``torch.jit.trace``) and called like it.

    The graph runs in C++ without holding Python's global interpreter lock, which eager PyTorch takes again
    between every two operations: beside the pipeline's Python threads (post-processing, merging, writing) and
    the other model stream, an eager forward pass waits for that lock at each of its hundreds of operations
    (a 1216² tile on one thread: 0.77 s alone, 1.30 s beside one busy Python thread; traced 0.78 and 0.81 s).
    The same operations run, so the outputs are the same to the bit (test), for any input size and batch. Inputs
    must be multiples of ``STRIDE_MULTIPLE`` (as ``Predictor`` pads them): the eager check of that is not recorded.
    """

    def __init__(self, network: PromptedCPN):
        super().__init__()
        self.config = network.config
        image = torch.zeros(1, 3, 4 * STRIDE_MULTIPLE, 4 * STRIDE_MULTIPLE).to(memory_format=torch.channels_last)
        prompt = torch.zeros(1, dtype=torch.long)
        with torch.inference_mode(), warnings.catch_warnings():
            # torch says tracing is deprecated, and that upsampled_conv's input-size check is kept as a constant
            warnings.simplefilter("ignore")
            self.graph = torch.jit.trace(_OutputTuple(network), (image, prompt), check_trace=False)

    def forward(self, image: torch.Tensor, prompt: torch.Tensor) -> CPNOutput:
        return CPNOutput(*self.graph(image, prompt))


class _OutputTuple(nn.Module):
    """``network``'s output as the tuple of tensors that tracing records."""

    def __init__(self, network: PromptedCPN):
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor, prompt: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.network(image, prompt)
        return out.logits, out.refine, out.features, out.shape_weight, out.shape_bias


def mid_intensity(intensity: tuple[float, float]) -> int:
    """The ``uint8`` value that normalises to 0 for whole-image ``intensity`` percentiles: what tiles read beyond a
    slide's edge and what training crops see beyond an image's edge."""
    return int(round((intensity[0] + intensity[1]) / 2))


def normalise_image(image, low: float, high: float):
    """Map intensities (numpy or torch, 0..255 range) to the network's input range using *whole-image*
    percentiles ``low``/``high``, never statistics of the tile itself."""
    return ((image - low) / max(high - low, 1.0) - 0.5) / 0.5


def normalise_image_(image: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """:func:`normalise_image` of a float tensor in place: the same arithmetic, without full-size temporaries."""
    return image.sub_(low).div_(max(high - low, 1.0)).sub_(0.5).div_(0.5)
