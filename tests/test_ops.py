"""Tensor operations that give the same bits with any number of threads."""

import pytest
import torch

from promptseg_cli.model.ops import matmul


@pytest.mark.parametrize("rows", [1, 5, 6, 300])
def test_matmul_is_the_same_with_one_thread_or_two(rows):
    """A few rows (five candidates in a tile) are where BLAS sums differently with two threads than with one."""
    generator = torch.Generator().manual_seed(rows)
    a, b = torch.randn(rows, 32, generator=generator), torch.randn(32, 34, generator=generator)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = matmul(a, b)
        torch.set_num_threads(2)
        two = matmul(a, b)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    torch.testing.assert_close(one, a @ b)
    assert matmul(a[0], b).shape == (34,)
