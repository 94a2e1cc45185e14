"""Widening a trained network without changing what it computes, so that a larger model can start from a smaller
one's training (``promptseg train --init MODEL --width W``).

Every block keeps its trained channels first and gets new ones after them. A new channel starts with fresh
weights from the old inputs (and other new channels), while the weights *from* new channels into trained channels
start at zero: the wider network's outputs are those of the trained one (up to float rounding) until training
moves those zeros, and the new channels start learning with the first gradient step.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .network import CPNConfig, PromptedCPN


def widen(network: PromptedCPN, config: CPNConfig) -> PromptedCPN:
    """A new network of ``config``, at least as wide as ``network`` in every block and otherwise the same
    architecture, holding ``network``'s weights as described in the module docstring."""
    old_config = network.config
    if replace(config, encoder=old_config.encoder, decoder=old_config.decoder) != old_config or any(
            new < old for new, old in zip(config.encoder + config.decoder, old_config.encoder + old_config.decoder)):
        raise ValueError(f"cannot widen a network of {old_config.encoder + old_config.decoder} channels to "
                         f"{config.encoder + config.decoder} (widening keeps every other setting and narrows nothing)")
    wide = PromptedCPN(config)
    old_modules = dict(network.named_modules())
    decoder_inputs = {f"up.{k}.conv.0": (old_in, new_in) for k, (old_in, new_in) in enumerate(zip(
        (old_config.encoder[-1], *old_config.decoder[:-1]), (config.encoder[-1], *config.decoder[:-1])))}
    with torch.no_grad():
        for name, module in wide.named_modules():
            old = old_modules[name]
            if isinstance(module, nn.Conv2d):
                if name in decoder_inputs:  # input: the upsampled features, then the skip features
                    old_in, new_in = decoder_inputs[name]
                    inputs = torch.cat([torch.arange(old_in), new_in + torch.arange(old.in_channels - old_in)])
                else:
                    inputs = torch.arange(old.in_channels)
                _embed(module, old, torch.arange(old.out_channels), inputs)
            elif isinstance(module, nn.Linear):  # a FiLM projection: scales of every channel, then shifts
                half, new_half = old.out_features // 2, module.out_features // 2
                outputs = torch.cat([torch.arange(half), new_half + torch.arange(half)])
                _embed(module, old, outputs, torch.arange(old.in_features))
            elif isinstance(module, nn.BatchNorm2d):
                for key, value in old.state_dict().items():
                    target = getattr(module, key)
                    if value.ndim:
                        target[: len(value)] = value
                    else:  # the count of batches seen
                        target.copy_(value)
            elif isinstance(module, nn.Embedding):
                module.weight.copy_(old.weight)
    return wide


def _embed(module: nn.Conv2d | nn.Linear, old: nn.Conv2d | nn.Linear, outputs: torch.Tensor,
           inputs: torch.Tensor) -> None:
    """Put ``old``'s weights at ``module``'s ``outputs`` x ``inputs``; the trained outputs read nothing else."""
    module.weight[outputs] = 0.0
    module.weight[outputs[:, None], inputs[None, :]] = old.weight
    if old.bias is not None:
        module.bias[outputs] = old.bias
