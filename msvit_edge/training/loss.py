"""Generalized batch-shaping (gBaS) loss for MSViT's gate (Havtorn et al., 2023, arXiv 2307.02321).

The gate scores, for every image and each of R coarse grid positions, the probability x that the region is
tokenized fine. Batch-shaping (Bejnordi et al., ICLR 2020) makes the distribution of such outputs across a batch
follow a prior by penalising the Cramer-von Mises distance between the batch's empirical CDF and the prior's CDF.
gBaS gives each position j its own relaxed-Bernoulli prior RB(mu_j, tau_j) with learned parameters, ties the means
{mu_j} to the compute budget with a hyperprior, and pushes the temperatures down with an L1 term:

    L = mean_j BaS(x[:, j]; RB(mu_j, tau_j)) + BaS({mu_j}; hyperprior) + tau_weight * mean_j tau_j.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from msvit_edge.errors import require
from msvit_edge.training.betainc import beta_cdf

__all__ = [
    "GBaSConfig",
    "GBaSLoss",
    "GeneralizedBatchShaping",
    "batch_shaping_loss",
    "gather_batch",
    "normal_cdf",
    "relaxed_bernoulli_cdf",
]

_HYPERPRIORS = ("beta", "normal", "none")


def batch_shaping_loss(x: Tensor, cdf: Callable[[Tensor], Tensor]) -> Tensor:
    """Cramer-von Mises distance between a batch's empirical CDF and a prior CDF (Bejnordi et al., 2020).

    With the N values of a column sorted, x_(1) <= ... <= x_(N), the loss is (1/N) sum_i (i/(N+1) - F(x_(i)))^2.
    The ranks i/(N+1) are constants, so the gradient flows through F(x_(i)) only and moves each sorted value
    towards the prior's i/(N+1) quantile.

    Args:
        x: Values in the prior's support, [N] or [N, R]; each of the R columns is shaped on its own.
        cdf: Prior CDF, applied elementwise to the column-sorted x; parameters of shape [R] broadcast over the last
            dim give each column its own prior.

    Returns:
        Scalar loss, averaged over the columns.

    Raises:
        ValueError: If x is empty or not 1-D or 2-D.
    """
    if x.ndim not in (1, 2) or x.numel() == 0:
        raise ValueError(f"batch_shaping_loss expects a non-empty [N] or [N, R] tensor, got {tuple(x.shape)}")
    n = x.shape[0]
    ranks = torch.arange(1, n + 1, dtype=x.dtype, device=x.device) / (n + 1)  # [N], empirical CDF at each rank
    ranks = ranks.view(n, *([1] * (x.ndim - 1)))  # [N] or [N, 1]
    return (ranks - cdf(x.sort(dim=0).values)).square().mean()


def relaxed_bernoulli_cdf(x: Tensor, mu: Tensor, tau: Tensor, eps: float = 1e-3) -> Tensor:
    """CDF of the relaxed Bernoulli (binary Concrete) RB(mu, tau): sigmoid(tau * logit(x) - logit(mu)).

    It is the law of sigmoid((logit(mu) + L) / tau) with L standard logistic noise, so P(X > 1/2) = mu, and a
    temperature tau < 1 puts the mass near 0 and 1. x is clipped to [eps, 1 - eps] to keep logit finite; clipped
    values get no gradient, as in the authors' code.

    Args:
        x: Points, any shape.
        mu: Probability of the underlying hard Bernoulli, in (0, 1), broadcast against x (e.g. [R] for x [N, R]).
        tau: Temperature, > 0, broadcast against x.
        eps: Clipping margin, in (0, 1/2).

    Returns:
        F(x), of the broadcast shape.

    Raises:
        ValueError: If eps is outside (0, 1/2).
    """
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    return torch.sigmoid(tau * _log_odds(x.clamp(eps, 1 - eps)) - _log_odds(mu))


def _log_odds(p: Tensor) -> Tensor:
    # torch.logit, spelled out: far slower than these two ops on small CPU tensors (docs/measurements.md).
    return p.log() - torch.log1p(-p)


def normal_cdf(x: Tensor, mean: float, std: float) -> Tensor:
    """CDF of the Normal N(mean, std^2).

    Args:
        x: Points, any shape.
        mean: Mean.
        std: Standard deviation, > 0.

    Returns:
        F(x), shaped like x.

    Raises:
        ValueError: If std is not positive.
    """
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")
    return torch.special.ndtr((x - mean) / std)


def gather_batch(x: Tensor) -> Tensor:
    """Concatenates x from all data-parallel ranks along dim 0, differentiably; identity when not distributed.

    Batch-shaping compares the CDF of the whole batch with a prior, so under data parallelism it must see the
    global batch, not one rank's shard. The gather is differentiable: its backward sums over ranks the gradients
    that each rank sends to the gathered copy of this rank's rows. Every rank computes the same loss L on the same
    gathered tensor, so the local x receives world_size * dL/dx_local. DDP then averages parameter gradients over
    ranks, dividing by world_size, which leaves exactly the single-process gradient of L on the global batch
    (gradients of replicated parameters such as gBaS's mu and tau are identical on every rank already).

    Args:
        x: This rank's rows, [B_local, ...]; every rank must pass the same shape (all-gather needs equal sizes).

    Returns:
        [world_size * B_local, ...], rank 0's rows first.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    # torch.distributed.nn.functional.all_gather, the public differentiable gather, warns that it is deprecated
    # in favour of all_gather_single and fails under torch.compile; older torch lacks the latter.
    # Both backward passes sum over ranks. Collectives need contiguous memory.
    try:
        from torch.distributed._functional_collectives import all_gather_single
    except ImportError:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(x.contiguous()), dim=0)
    return all_gather_single(x.contiguous(), 0, dist.group.WORLD)


@dataclass(frozen=True)
class GBaSConfig:
    """Settings of the gBaS loss.

    Attributes:
        target: Expected fraction of regions tokenized fine, i.e. the compute budget. It is the hyperprior's mean
            and the initial value of every mu_j, so training starts on budget. 0.35: this project's default budget.
        hyperprior: Prior on the per-position means {mu_j}: "beta" (support [0, 1], like mu), "normal" (the
            Gaussian described in the authors' notebook) or "none" (mu_j free, so the budget is not enforced).
        concentration: a + b of the Beta hyperprior Beta(target * k, (1 - target) * k). Its std is
            sqrt(m (1 - m) / (k + 1)), about 0.1 at k = 20 and m = 0.35: positions may differ by roughly +-0.2.
        std: Std of the Normal hyperprior; 0.1 matches the spread of the Beta default.
        tau_weight: Weight of the L1 penalty on the temperatures, which favours near-binary gate outputs (0.1 as in
            the authors' example).
        init_tau: Initial temperature of every prior, in (0, 1). 0.5 (sigmoid(0), as in the authors' example) is
            already bimodal, yet not so peaked that the prior CDF is flat in the middle, where gate outputs in
            (0, 1) would then get vanishing gradients.
    """

    target: float = 0.35
    hyperprior: Literal["beta", "normal", "none"] = "beta"
    concentration: float = 20.0
    std: float = 0.1
    tau_weight: float = 0.1
    init_tau: float = 0.5

    def __post_init__(self) -> None:
        checks = {
            f"target must be in (0, 1), got {self.target}": 0 < self.target < 1,
            f"hyperprior must be one of {_HYPERPRIORS}, got {self.hyperprior!r}": self.hyperprior in _HYPERPRIORS,
            f"concentration must be > 0, got {self.concentration}": self.concentration > 0,
            f"std must be > 0, got {self.std}": self.std > 0,
            f"tau_weight must be >= 0, got {self.tau_weight}": self.tau_weight >= 0,
            f"init_tau must be in (0, 1), got {self.init_tau}": 0 < self.init_tau < 1,
        }
        require(checks, "gBaS: ")  # user-facing: these come from command-line options


class GBaSLoss(NamedTuple):
    """Terms of the gBaS loss (scalars); call backward on total, log the others."""

    total: Tensor
    position: Tensor
    hyperprior: Tensor
    tau: Tensor


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _hyperprior_cdf(config: GBaSConfig) -> Callable[[Tensor], Tensor] | None:
    m = config.target
    if config.hyperprior == "beta":
        return partial(beta_cdf, a=m * config.concentration, b=(1 - m) * config.concentration)
    if config.hyperprior == "normal":
        return partial(normal_cdf, mean=m, std=config.std)
    return None


class GeneralizedBatchShaping(nn.Module):
    """Generalized batch-shaping loss with a learned relaxed-Bernoulli prior RB(mu_j, tau_j) per grid position.

    mu_j = P(x_j > 1/2) is the expected fraction of images whose region j is tokenized fine; the hyperprior keeps
    the {mu_j} spread around the budget. Both mu and tau are sigmoids of free parameters, so they stay in (0, 1)
    (tau < 1 keeps every prior bimodal, as in the authors' code). Train them with the gate, under the same
    optimiser. Under DDP the module needs no wrapping: every rank computes the same loss on the gathered batch, so
    mu and tau get the same gradients everywhere and stay in sync.

    Args:
        num_positions: R, the number of coarse grid positions the gate scores.
        config: Loss settings.

    Raises:
        ValueError: If num_positions < 1.
    """

    def __init__(self, num_positions: int, config: GBaSConfig = GBaSConfig()):
        super().__init__()
        if num_positions < 1:
            raise ValueError(f"num_positions must be >= 1, got {num_positions}")
        self.num_positions = num_positions
        self.config = config
        self.mu_logit = nn.Parameter(torch.full((num_positions,), _logit(config.target)))  # [R]
        self.tau_logit = nn.Parameter(torch.full((num_positions,), _logit(config.init_tau)))  # [R]
        self.hyperprior_cdf = _hyperprior_cdf(config)

    @property
    def mu(self) -> Tensor:
        """Per-position prior means, [R]."""
        return torch.sigmoid(self.mu_logit)

    @property
    def tau(self) -> Tensor:
        """Per-position prior temperatures, [R]."""
        return torch.sigmoid(self.tau_logit)

    def forward(self, x: Tensor) -> GBaSLoss:
        """Computes the loss on the global batch (gathered over data-parallel ranks, see `gather_batch`).

        Args:
            x: This rank's gate probabilities that each region is tokenized fine, [B_local, R], in [0, 1].

        Returns:
            The loss terms; total = position + hyperprior + tau_weight * tau.

        Raises:
            ValueError: If x is not [B, R] with values in [0, 1], or the global batch has fewer than 2 rows.
        """
        self._check_input(x)
        x = gather_batch(x.to(self.mu_logit.dtype))  # [B, R]; gates may come in lower precision under autocast
        if x.shape[0] < 2:
            raise ValueError(f"gBaS needs a batch of >= 2 images to form a CDF, got {x.shape[0]}")
        mu, tau = self.mu, self.tau  # [R], [R]
        position = batch_shaping_loss(x, partial(relaxed_bernoulli_cdf, mu=mu, tau=tau))
        hyperprior = mu.new_zeros(()) if self.hyperprior_cdf is None else batch_shaping_loss(mu, self.hyperprior_cdf)
        tau_term = tau.mean()  # L1 norm / R, since tau > 0
        total = position + hyperprior + self.config.tau_weight * tau_term
        return GBaSLoss(total, position, hyperprior, tau_term)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.num_positions:
            raise ValueError(f"x must be [B, {self.num_positions}] gate probabilities, got {tuple(x.shape)}")
        # Written so that NaN fails too.
        if not ((x >= 0) & (x <= 1)).all():
            raise ValueError("x must hold probabilities in [0, 1]")
