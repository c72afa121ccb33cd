r"""Size-factor normalisation that does not depend on which genes are missing.

A count profile is scaled by a size factor estimated from the *observed* genes only:

.. math:: s_c = \frac{\sum_{g \in O_c} x_{cg}}{\sum_{g \in O_c} p_g},
          \qquad y_{cg} = \log\left(1 + 10^4\, x_{cg} / s_c\right),

where :math:`p_g` is gene :math:`g`'s expected share of the library, learned on the training
data. With every gene observed, :math:`\sum_g p_g = 1` and :math:`s_c` is the library size,
so :math:`y` equals ``sc.pp.normalize_total(target_sum=1e4)`` followed by ``sc.pp.log1p``.
With a 64-gene panel, or half of the entries missing, the observed values of a cell keep the
same normalised level instead of being inflated by a smaller library.
"""

from __future__ import annotations

import torch

TARGET_SUM = 1e4


def size_factors(
    counts: torch.Tensor, observed: torch.Tensor, gene_share: torch.Tensor
) -> torch.Tensor:
    """Estimate each sample's library size from its observed genes.

    Parameters
    ----------
    counts
        ``(B, G)`` counts; unobserved entries may hold anything (they are ignored).
    observed
        ``(B, G)`` bool, ``True`` where the value is known.
    gene_share
        ``(G,)`` expected share of the library per gene (sums to 1 over the vocabulary).

    Returns
    -------
    ``(B,)`` size factors, 1 for samples without observed counts.
    """
    total = torch.where(observed, counts, 0.0).sum(dim=1)
    share = (observed.to(counts.dtype) * gene_share).sum(dim=1)
    return size_factors_from_sums(total, share)


def size_factors_from_sums(total: torch.Tensor, observed_share: torch.Tensor) -> torch.Tensor:
    """Size factors from per-sample observed totals and summed library shares.

    Parameters
    ----------
    total
        ``(B,)`` sum of the observed counts of each sample.
    observed_share
        ``(B,)`` sum of :math:`p_g` over each sample's observed genes.

    Returns
    -------
    ``(B,)`` size factors, 1 where a sample has no observed counts.
    """
    factors = total / observed_share.clamp_min(1e-12)
    return torch.where(factors > 0, factors, torch.ones_like(factors))


def to_model_scale(
    x: torch.Tensor,
    observed: torch.Tensor,
    gene_share: torch.Tensor,
    is_counts: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring input values to the model's log scale; unobserved entries become 0.

    Parameters
    ----------
    x
        ``(B, G)`` input values (counts, or values already on a log scale).
    observed
        ``(B, G)`` bool mask of known values.
    gene_share
        ``(G,)`` expected library share per gene (used for counts only).
    is_counts
        Whether ``x`` holds counts.

    Returns
    -------
    ``(y, size_factor)``: ``(B, G)`` log-scale values and ``(B,)`` size factors (ones for
    log-scale input).
    """
    x = torch.where(observed, x, 0.0)
    if not is_counts:
        return x, x.new_ones(x.shape[0])
    factors = size_factors(x, observed, gene_share)
    return log_normalise(x, factors), factors


def log_normalise(counts: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``log1p(counts / size_factor * 1e4)`` for counts ``(B, G)`` and size factors ``(B,)``."""
    return torch.log1p(counts / factors[:, None] * TARGET_SUM)


def to_input_scale(y: torch.Tensor, size_factor: torch.Tensor, is_counts: bool) -> torch.Tensor:
    """Invert :func:`to_model_scale`: log-scale values ``(B, G)`` back to the input scale."""
    if not is_counts:
        return y
    return torch.expm1(y).clamp_min(0.0) * size_factor[:, None] / TARGET_SUM
