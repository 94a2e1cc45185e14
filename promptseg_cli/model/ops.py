"""Tensor operations whose results do not depend on the number of threads.

BLAS splits small matrix products differently with one thread than with several (with a handful of rows, e.g. a
tile with five candidates), so the last bits of a tile's objects would depend on the thread count. The network's
convolutions stay with oneDNN, which does the same on some CPUs for tiles only a few rows high (an Intel Xeon:
the deepest encoder convolution of a 48 x 640 tile, 3 x 40 pixels there, gives other last bits with two threads
than with one): bit-identical objects here and on dask workers need the same threads per model stream
(``tests/test_distributed.py`` compares a run with its dask workers', one thread each).
"""

from __future__ import annotations

import torch


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for ``a`` ``(..., K)`` and ``b`` ``(K, M)`` as a broadcast product summed over ``K``: each output
    is one reduction in one thread, in the same order whatever the thread count."""
    return (a.unsqueeze(-1) * b).sum(-2)
