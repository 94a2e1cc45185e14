"""Tensor operations whose results do not depend on the number of threads.

A run's tiles must give bit-identical objects whether they go through the model here or on dask workers that use
another number of torch threads. BLAS splits small matrix products differently with one thread than with several
(with a handful of rows, e.g. a tile with five candidates), so the last bits would differ. The dense head's
product over every pixel (``network.py``) stays with BLAS: with that many rows it gave the same bits with one and
two threads on every tile checked (``tests/test_distributed.py`` compares a run with its dask workers').
"""

from __future__ import annotations

import torch


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for ``a`` ``(..., K)`` and ``b`` ``(K, M)`` as a broadcast product summed over ``K``: each output
    is one reduction in one thread, in the same order whatever the thread count."""
    return (a.unsqueeze(-1) * b).sum(-2)
