"""msvit_edge.training.betainc: the Beta CDF against scipy, its gradient against the density and finite differences."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from scipy import special, stats
from torch.autograd import gradcheck

from msvit_edge.training.betainc import beta_cdf

F64 = torch.float64

AB = [(0.5, 0.5), (0.1, 0.2), (0.2, 3.0), (1.0, 1.0), (2.0, 5.0), (7.0, 13.0), (50.0, 80.0), (300.0, 700.0)]


@pytest.mark.parametrize(("a", "b"), AB)
def test_beta_cdf_matches_scipy(a, b):
    edges = [0.0, 1e-300, 1e-12, 1e-6, 1e-3]
    grid = np.r_[edges, np.linspace(0.001, 0.999, 499), [1 - e for e in reversed(edges)]]
    ours = beta_cdf(torch.tensor(grid, dtype=F64), a, b).numpy()
    np.testing.assert_allclose(ours, special.betainc(a, b, grid), rtol=0, atol=1e-10)


def test_beta_cdf_dtype_and_outside_support():
    x = torch.tensor([-0.5, 0.25, 1.5], requires_grad=True)
    y = beta_cdf(x, 2.0, 3.0)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, torch.tensor([0.0, float(special.betainc(2.0, 3.0, 0.25)), 1.0]))
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([0.0, float(stats.beta.pdf(0.25, 2.0, 3.0)), 0.0]))


@pytest.mark.parametrize(("a", "b"), [(0.5, 0.5), (2.0, 5.0), (7.0, 13.0), (50.0, 80.0)])
def test_beta_cdf_gradcheck(a, b):
    assert gradcheck(
        partial(beta_cdf, a=a, b=b), (torch.linspace(0.05, 0.95, 20, dtype=F64).view(4, 5).requires_grad_(),)
    )


@pytest.mark.parametrize(("a", "b"), [(0.0, 1.0), (1.0, -2.0)])
def test_beta_cdf_rejects_bad_parameters(a, b):
    with pytest.raises(ValueError, match="Beta parameters"):
        beta_cdf(torch.rand(3), a, b)


def test_beta_cdf_nan_and_too_large_parameters():
    assert beta_cdf(torch.tensor([0.3, float("nan")], dtype=F64), 2.0, 3.0)[1].isnan()
    with pytest.raises(RuntimeError, match="did not converge"):
        beta_cdf(torch.tensor([0.5], dtype=F64), 1e8, 1e8)
