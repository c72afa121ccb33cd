"""Random hiding of context tokens and the draw of restoration targets.

Every draw takes an explicit :class:`torch.Generator` (``None`` uses torch's global RNG), so
that a training step's randomness comes from one generator whose state can be saved.
"""

from __future__ import annotations

import torch

from gexbert_sc._constants import MODULE_KEYS


def hide_tokens(
    valid: torch.Tensor, fraction: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Hide ``fraction`` of each sample's context tokens at random, never padding.

    Parameters
    ----------
    valid
        ``(B, L)`` bool, ``False`` on padding.
    fraction
        Fraction of the ``L`` positions to hide (at least one when positive).
    generator
        Source of the random draws.

    Returns
    -------
    ``(B, L)`` bool, ``True`` on hidden tokens.
    """
    if fraction <= 0:
        return torch.zeros_like(valid)
    n_hidden = max(1, round(fraction * valid.shape[1]))
    draws = torch.rand(valid.shape, device=valid.device, generator=generator)
    scores = torch.where(valid, draws, -1.0)
    hidden_pos = scores.topk(n_hidden, dim=1).indices
    return torch.zeros_like(valid).scatter(1, hidden_pos, True) & valid


def withhold_genes(
    observed: torch.Tensor,
    fraction_range: tuple[float, float],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Withhold a random share of each sample's observed genes, whatever their values.

    Each sample draws its share uniformly in ``fraction_range``, then each observed gene is
    withheld with that probability: the genes are chosen irrespective of their values, as the
    genes a panel did not measure are.

    Parameters
    ----------
    observed
        ``(B, G)`` bool observed mask.
    fraction_range
        ``(low, high)`` bounds of the per-sample share, ``0 <= low <= high < 1``.
    generator
        Source of the random draws.

    Returns
    -------
    ``(B, G)`` bool, ``True`` on withheld genes (a subset of ``observed``).
    """
    low, high = fraction_range
    shape = observed.shape
    share = low + (high - low) * torch.rand(
        (shape[0], 1), device=observed.device, generator=generator
    )
    draws = torch.rand(shape, device=observed.device, generator=generator)
    return observed & (draws < share)


def draw_targets(
    y: torch.Tensor,
    observed: torch.Tensor,
    gene_idx: torch.Tensor,
    valid: torch.Tensor,
    hidden: torch.Tensor,
    generator: torch.Generator | None = None,
    withheld: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Draw as many restoration targets per sample as there are context positions.

    Every hidden context gene comes first, then random withheld genes (with ``withheld``)
    or, without it, random observed genes the encoder did not see (zeros included).

    Parameters
    ----------
    y, observed
        ``(B, G)`` log-scale values and observed mask.
    gene_idx, valid, hidden
        ``(B, L)`` context genes, ``False`` on padding, ``True`` on hidden tokens.
    generator
        Source of the random draws.
    withheld
        ``(B, G)`` bool genes withheld from the encoder (:func:`withhold_genes`); when
        given, targets are drawn only from them and the hidden tokens.

    Returns
    -------
    Target gene indices, their values and a validity mask, under the ``MODULE_KEYS`` target
    keys, each ``(B, min(L, G))``.
    """
    visible = torch.zeros_like(observed).scatter(1, gene_idx, valid & ~hidden)
    was_hidden = torch.zeros_like(observed).scatter(1, gene_idx, hidden)
    draws = torch.rand(observed.shape, device=observed.device, generator=generator)
    pool = observed & ~visible if withheld is None else withheld | was_hidden
    priority = torch.where(pool, draws + was_hidden.float(), -1.0)
    scores, target_idx = priority.topk(min(gene_idx.shape[1], observed.shape[1]), dim=1)
    return {
        MODULE_KEYS.TARGET_IDX_KEY: target_idx,
        MODULE_KEYS.TARGET_KEY: y.gather(1, target_idx),
        MODULE_KEYS.TARGET_VALID_KEY: scores >= 0,
    }


def withhold_outside_panel(
    observed: torch.Tensor, min_genes: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Keep a random panel of each sample's observed genes and withhold the rest.

    Each sample draws its panel size log-uniformly between ``min_genes`` and its number of
    observed genes (a sample with fewer observed genes keeps them all), then keeps that many
    of its observed genes chosen uniformly at random. Log-uniform sizes give as many steps
    to panels of 16–32 genes as to panels of 1,000–2,000, so that one classifier learns to
    read small panels and whole profiles alike.

    Parameters
    ----------
    observed
        ``(B, G)`` bool observed mask.
    min_genes
        Smallest panel size, ``>= 1``.
    generator
        Source of the random draws.

    Returns
    -------
    ``(B, G)`` bool, ``True`` on withheld genes (a subset of ``observed``).
    """
    n_observed = observed.sum(dim=1, keepdim=True).float()
    low = torch.clamp(n_observed, max=float(min_genes)).clamp_min(1.0).log()
    high = n_observed.clamp_min(1.0).log()
    draw = torch.rand(low.shape, device=observed.device, generator=generator)
    n_keep = torch.exp(low + (high - low) * draw).round()
    priority = torch.rand(observed.shape, device=observed.device, generator=generator)
    priority = torch.where(observed, priority, -1.0)
    rank = priority.argsort(dim=1, descending=True).argsort(dim=1)
    return observed & (rank >= n_keep)
