"""Tests of the (generalized) batch-shaping loss against hand arithmetic, scipy and a real 2-process gloo group."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from scipy import stats
from torch import nn
from torch.autograd import gradcheck

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.training.betainc import beta_cdf
from msvit_edge.training.loss import (
    GBaSConfig,
    GeneralizedBatchShaping,
    batch_shaping_loss,
    gather_batch,
    normal_cdf,
    relaxed_bernoulli_cdf,
)

F64 = torch.float64


def _uniform_cdf(x: torch.Tensor) -> torch.Tensor:
    return x


def _distinct(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """[rows, cols] float64 values in (0.05, 0.95), at least 0.9 / (rows * cols) apart, so gradcheck's nudges never
    reorder a sort."""
    g = torch.Generator().manual_seed(seed)
    return 0.05 + 0.9 * (torch.randperm(rows * cols, generator=g).to(F64).view(rows, cols) + 0.5) / (rows * cols)


# --- batch_shaping_loss -------------------------------------------------------------------------------------------


def test_batch_shaping_by_hand():
    # Sorted: 0.1, 0.3, 0.6; ranks 1/4, 2/4, 3/4; with F(x) = x the differences are 0.15, 0.2, 0.15.
    expected = (0.15**2 + 0.2**2 + 0.15**2) / 3  # = 0.085 / 3
    loss = batch_shaping_loss(torch.tensor([0.6, 0.1, 0.3], dtype=F64), _uniform_cdf)
    assert loss.item() == pytest.approx(expected, abs=1e-15)


def test_batch_shaping_per_column():
    x = torch.tensor([[0.6, 0.9], [0.1, 0.8], [0.3, 0.7]], dtype=F64)
    col1 = (0.45**2 + 0.3**2 + 0.15**2) / 3  # sorted 0.7, 0.8, 0.9 against ranks 1/4, 2/4, 3/4
    expected = ((0.15**2 + 0.2**2 + 0.15**2) / 3 + col1) / 2
    assert batch_shaping_loss(x, _uniform_cdf).item() == pytest.approx(expected, abs=1e-15)
    # Columns are shaped on their own: a flattened 6-sample CDF would give another value.
    assert batch_shaping_loss(x.flatten(), _uniform_cdf).item() != pytest.approx(expected, abs=1e-6)


def test_batch_shaping_per_column_prior_broadcasts():
    x = _distinct(7, 3)
    means = torch.tensor([0.2, 0.5, 0.8], dtype=F64)
    loss = batch_shaping_loss(x, lambda s: torch.special.ndtr((s - means) / 0.2))
    columns = [batch_shaping_loss(x[:, j], partial(normal_cdf, mean=means[j].item(), std=0.2)) for j in range(3)]
    torch.testing.assert_close(loss, torch.stack(columns).mean())


def test_batch_shaping_gradcheck():
    cdf = partial(normal_cdf, mean=0.4, std=0.2)
    assert gradcheck(lambda x: batch_shaping_loss(x, cdf), (_distinct(6, 3).requires_grad_(),))
    assert gradcheck(lambda x: batch_shaping_loss(x, cdf), (_distinct(9, 1).flatten().requires_grad_(),))


@pytest.mark.parametrize("shape", [(0,), (0, 3), (2, 3, 4), ()])
def test_batch_shaping_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match="non-empty"):
        batch_shaping_loss(torch.zeros(shape), _uniform_cdf)


# --- prior CDFs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mu", [0.1, 0.35, 0.8])
@pytest.mark.parametrize("tau", [0.2, 0.5, 1.0])
def test_relaxed_bernoulli_mass_above_half_is_mu(mu, tau):
    cdf = relaxed_bernoulli_cdf(torch.tensor(0.5, dtype=F64), torch.tensor(mu, dtype=F64), torch.tensor(tau, dtype=F64))
    assert 1 - cdf.item() == pytest.approx(mu, abs=1e-12)


def test_relaxed_bernoulli_monotone_and_clipped():
    grid = torch.linspace(0, 1, 1001, dtype=F64)
    cdf = relaxed_bernoulli_cdf(grid, torch.tensor(0.3, dtype=F64), torch.tensor(0.4, dtype=F64))
    inside = (grid >= 1e-3) & (grid <= 1 - 1e-3)
    assert (cdf[inside].diff() > 0).all()
    # Outside [eps, 1 - eps] the CDF is frozen at its value on the boundary.
    assert (cdf[grid < 1e-3] == cdf[inside][0]).all() and (cdf[grid > 1 - 1e-3] == cdf[inside][-1]).all()


@pytest.mark.parametrize(("mu", "tau"), [(0.2, 0.3), (0.7, 1.0), (0.5, 2.0)])
def test_relaxed_bernoulli_matches_monte_carlo(mu, tau):
    # The CDF sigmoid(tau logit(x) - logit(mu)) is the law of sigmoid((logit(mu) + L) / tau), L ~ Logistic(0, 1).
    g = torch.Generator().manual_seed(0)
    noise = torch.logit(torch.rand(200_000, generator=g, dtype=F64))  # logistic samples
    samples = torch.sigmoid((torch.logit(torch.tensor(mu, dtype=F64)) + noise) / tau)
    grid = torch.linspace(0.02, 0.98, 25, dtype=F64)
    empirical = (samples[:, None] <= grid).to(F64).mean(0)
    exact = relaxed_bernoulli_cdf(grid, torch.tensor(mu, dtype=F64), torch.tensor(tau, dtype=F64))
    torch.testing.assert_close(empirical, exact, atol=6e-3, rtol=0)  # 5 sigma of a 200k-sample CDF estimate


def test_relaxed_bernoulli_gradcheck():
    x = _distinct(5, 3)
    mu = torch.tensor([0.2, 0.5, 0.7], dtype=F64, requires_grad=True)
    tau = torch.tensor([0.3, 0.6, 1.5], dtype=F64, requires_grad=True)
    assert gradcheck(relaxed_bernoulli_cdf, (x.requires_grad_(), mu, tau))


def test_relaxed_bernoulli_rejects_bad_eps():
    with pytest.raises(ValueError, match="eps"):
        relaxed_bernoulli_cdf(torch.rand(3), torch.tensor(0.5), torch.tensor(0.5), eps=0.5)


def test_normal_cdf_matches_scipy():
    grid = np.linspace(-0.5, 1.5, 201)
    ours = normal_cdf(torch.tensor(grid, dtype=F64), 0.35, 0.1).numpy()
    np.testing.assert_allclose(ours, stats.norm.cdf(grid, loc=0.35, scale=0.1), rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="std"):
        normal_cdf(torch.rand(3), 0.0, 0.0)


# --- GeneralizedBatchShaping --------------------------------------------------------------------------------------


def _randomised(num_positions: int, config: GBaSConfig, seed: int = 0) -> GeneralizedBatchShaping:
    """A float64 module whose per-position parameters differ, so per-position bugs show."""
    gbas = GeneralizedBatchShaping(num_positions, config).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        gbas.mu_logit.add_(torch.randn(num_positions, generator=g, dtype=F64))
        gbas.tau_logit.add_(torch.randn(num_positions, generator=g, dtype=F64))
    return gbas


def test_init_on_budget():
    gbas = GeneralizedBatchShaping(6, GBaSConfig(target=0.3, init_tau=0.4))
    torch.testing.assert_close(gbas.mu, torch.full((6,), 0.3))
    torch.testing.assert_close(gbas.tau, torch.full((6,), 0.4))
    assert {name for name, _ in gbas.named_parameters()} == {"mu_logit", "tau_logit"}


def test_gbas_reduces_to_batch_shaping():
    x = _distinct(8, 4)
    gbas = _randomised(4, GBaSConfig(hyperprior="none", tau_weight=0.0))
    out = gbas(x)
    expected = batch_shaping_loss(x, partial(relaxed_bernoulli_cdf, mu=gbas.mu, tau=gbas.tau))
    torch.testing.assert_close(out.total, expected)
    assert out.hyperprior.item() == 0.0
    # Shared fixed parameters: plain batch-shaping with one RB(mu, tau) prior for every position.
    with torch.no_grad():
        gbas.mu_logit.fill_(-0.4)
        gbas.tau_logit.fill_(0.3)
    mu, tau = torch.sigmoid(torch.tensor(-0.4, dtype=F64)), torch.sigmoid(torch.tensor(0.3, dtype=F64))
    torch.testing.assert_close(gbas(x).total, batch_shaping_loss(x, partial(relaxed_bernoulli_cdf, mu=mu, tau=tau)))


@pytest.mark.parametrize("hyperprior", ["beta", "normal"])
def test_gbas_terms(hyperprior):
    config = GBaSConfig(target=0.3, hyperprior=hyperprior, concentration=12.0, std=0.15, tau_weight=0.2)
    gbas = _randomised(5, config)
    out = gbas(_distinct(6, 5))
    if hyperprior == "beta":
        prior = partial(beta_cdf, a=0.3 * 12.0, b=0.7 * 12.0)  # mean a / (a + b) = target
    else:
        prior = partial(normal_cdf, mean=0.3, std=0.15)
    torch.testing.assert_close(out.hyperprior, batch_shaping_loss(gbas.mu, prior))
    torch.testing.assert_close(out.tau, gbas.tau.mean())
    torch.testing.assert_close(out.total, out.position + out.hyperprior + 0.2 * out.tau)


@pytest.mark.parametrize("hyperprior", ["beta", "normal"])
def test_gbas_gradcheck(hyperprior):
    gbas = _randomised(3, GBaSConfig(hyperprior=hyperprior))

    def total(x: torch.Tensor, mu_logit: torch.Tensor, tau_logit: torch.Tensor) -> torch.Tensor:
        params = {"mu_logit": mu_logit, "tau_logit": tau_logit}
        return torch.func.functional_call(gbas, params, (x,)).total

    inputs = (_distinct(5, 3), gbas.mu_logit.detach().clone(), gbas.tau_logit.detach().clone())
    assert gradcheck(total, tuple(t.requires_grad_() for t in inputs))


def _fit(config: GBaSConfig, steps: int = 100) -> tuple[float, float, float]:
    """Optimises free gate logits [128, 16] jointly with the module, as in the authors' example.

    Returns:
        Realised fraction of outputs > 1/2, mean of mu, mean of tau.
    """
    torch.manual_seed(0)
    # Positions start from fine fractions spread over (0.1, 0.9), 1/2 overall.
    logits = nn.Parameter(torch.linspace(-2, 2, 16) + torch.randn(128, 16))
    gbas = GeneralizedBatchShaping(16, config)
    with torch.no_grad():
        gbas.mu_logit.zero_()  # start off budget (mu = 1/2) so that reaching it is the hyperprior's doing
    opt = torch.optim.Adam([logits, *gbas.parameters()], lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        gbas(torch.sigmoid(logits)).total.backward()
        opt.step()
    return (logits > 0).float().mean().item(), gbas.mu.mean().item(), gbas.tau.mean().item()


@pytest.mark.parametrize(("target", "hyperprior"), [(0.35, "beta"), (0.65, "beta"), (0.65, "normal")])
def test_hyperprior_pulls_to_budget(target, hyperprior):
    fraction, mu_mean, _ = _fit(GBaSConfig(target=target, hyperprior=hyperprior), steps=150)
    assert fraction == pytest.approx(target, abs=0.05)
    assert mu_mean == pytest.approx(target, abs=0.05)


def test_no_hyperprior_leaves_budget_free():
    fraction, mu_mean, _ = _fit(GBaSConfig(target=0.35, hyperprior="none"))
    assert fraction == pytest.approx(0.5, abs=0.03) and mu_mean == pytest.approx(0.5, abs=0.03)


def test_tau_penalty_lowers_tau():
    _, _, tau_penalised = _fit(GBaSConfig(tau_weight=0.1))
    _, _, tau_free = _fit(GBaSConfig(tau_weight=0.0))
    assert tau_penalised < 0.5 - 0.1  # below its initial value
    assert tau_penalised < tau_free - 0.2


@pytest.mark.parametrize(
    ("shape", "match"), [((1, 4), ">= 2 images"), ((8, 3), r"\[B, 4\]"), ((8,), r"\[B, 4\]"), ((2, 2, 4), r"\[B, 4\]")]
)
def test_gbas_rejects_bad_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        GeneralizedBatchShaping(4)(torch.full(shape, 0.5))


@pytest.mark.parametrize("bad", [-0.1, 1.1, float("nan")])
def test_gbas_rejects_non_probabilities(bad):
    x = torch.full((4, 4), 0.5)
    x[2, 1] = bad
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        GeneralizedBatchShaping(4)(x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target": 0.0}, "target"),
        ({"target": 1.0}, "target"),
        ({"target": 1.5}, "target"),
        ({"hyperprior": "gamma"}, "hyperprior"),
        ({"concentration": 0.0}, "concentration"),
        ({"std": -1.0}, "std"),
        ({"tau_weight": -0.1}, "tau_weight"),
        ({"init_tau": 1.0}, "init_tau"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(MsvitEdgeError, match=match):
        GBaSConfig(**kwargs)


def test_gbas_rejects_no_positions():
    with pytest.raises(ValueError, match="num_positions"):
        GeneralizedBatchShaping(0)


# --- data parallelism ---------------------------------------------------------------------------------------------


def _ddp_problem() -> tuple[torch.Tensor, GeneralizedBatchShaping]:
    x = _distinct(8, 3, seed=1)  # the global batch: 8 images, 3 positions
    return x, _randomised(3, GBaSConfig(target=0.4), seed=1)


def _ddp_worker(rank: int, world_size: int, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        x, gbas = _ddp_problem()
        local = x.chunk(world_size)[rank].clone().requires_grad_()  # this rank's half of the batch
        loss = gbas(local).total
        loss.backward()
        grads = {"loss": loss.detach(), "x": local.grad, "mu_logit": gbas.mu_logit.grad, "tau": gbas.tau_logit.grad}
        torch.save(grads, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()  # no rank leaves while the other is still in a collective: gloo aborts a peer's pending one
    finally:
        dist.destroy_process_group()


def test_gather_batch_is_identity_without_process_group():
    x = torch.rand(3, 2)
    assert gather_batch(x) is x


def test_data_parallel_matches_single_process(tmp_path):
    world_size = 2
    mp.spawn(_ddp_worker, args=(world_size, str(tmp_path / "store"), str(tmp_path)), nprocs=world_size)
    x, gbas = _ddp_problem()
    x.requires_grad_()
    loss = gbas(x).total
    loss.backward()
    for rank, rows in enumerate(torch.arange(len(x)).chunk(world_size)):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got["loss"], loss.detach())
        # Each rank backpropagates the same global loss L, and all_gather's backward sums over ranks what they send
        # to this rank's rows: its x gets world_size * dL/dx[rows]. DDP's averaging over ranks divides the model's
        # gradients by world_size again, which gives back the single-process gradient.
        torch.testing.assert_close(got["x"], world_size * x.grad[rows])
        # mu and tau are replicated, not gathered: every rank already holds the single-process gradient.
        torch.testing.assert_close(got["mu_logit"], gbas.mu_logit.grad)
        torch.testing.assert_close(got["tau"], gbas.tau_logit.grad)
