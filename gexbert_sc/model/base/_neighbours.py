"""Reference-neighbour restoration: the mean of the nearest training samples, and its blend.

A sample's missing genes are restored twice: by the decoder, and by the mean of its ``k``
nearest reference samples (the model's training AnnData), found on the genes the sample
has, as :class:`sklearn.impute.KNNImputer` finds them. The two are blended with a weight
that depends on how much of the sample was observed, fitted when the model is trained on
validation samples with entries hidden at several rates (:func:`best_blend_weight`), so
that the blend is never worse there than either part (see :doc:`/design`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

#: Neighbours averaged per sample.
N_NEIGHBOURS = 15
#: At most this many reference values (samples × genes) are kept in memory.
MAX_REFERENCE_VALUES = 10_000_000
#: Reference samples compared with a minibatch at once.
REFERENCE_CHUNK = 1024
#: Shares of each validation sample's observed entries hidden to fit the blend weights.
FIT_RATES = (0.1, 0.5, 0.9)
#: Validation samples used to fit the blend weights (a seeded subset beyond).
MAX_FIT_SAMPLES = 500
#: Hidden entries scored per fitting sample (a random subset beyond).
MAX_FIT_GENES = 128


class Reference(NamedTuple):
    """Reference samples on the model's log scale."""

    #: ``(n, G)`` values, 0 where missing.
    values: torch.Tensor
    #: ``(n, G)`` bool, ``True`` where observed.
    observed: torch.Tensor


def nearest_references(
    values: torch.Tensor, observed: torch.Tensor, reference: Reference, k: int
) -> torch.Tensor:
    """Find each sample's ``k`` nearest reference samples on the genes both have.

    The distance is the mean squared difference over the genes observed in both (the
    ranking of scikit-learn's ``nan_euclidean_distances``); a reference sample sharing no
    gene is never a neighbour unless fewer than ``k`` share one.

    Parameters
    ----------
    values, observed
        ``(B, G)`` samples on the model's log scale (0 where missing) and their mask.
    reference
        The reference samples.
    k
        Neighbours per sample (at most the number of reference samples).

    Returns
    -------
    ``(B, k)`` indices into the reference.
    """
    mask = observed.to(values.dtype)
    q = values * mask
    distances = []
    # reference rows a chunk at a time: no temporary of the reference's size
    for start in range(0, len(reference.values), REFERENCE_CHUNK):
        r = reference.values[start : start + REFERENCE_CHUNK]
        ref_mask = reference.observed[start : start + REFERENCE_CHUNK].to(values.dtype)
        squared = (q * q) @ ref_mask.T - 2 * q @ r.T + mask @ (r * r).T
        shared = mask @ ref_mask.T
        distances.append(torch.where(shared > 0, squared / shared.clamp_min(1), torch.inf))
    distance = torch.cat(distances, dim=1)
    return distance.topk(min(k, len(reference.values)), dim=1, largest=False).indices


def neighbour_mean(
    reference: Reference, neighbours: torch.Tensor, gene_idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the neighbours' values of genes ``gene_idx``, over those that observed them.

    Parameters
    ----------
    reference
        The reference samples.
    neighbours
        ``(B, k)`` reference indices (:func:`nearest_references`).
    gene_idx
        ``(G',)`` genes.

    Returns
    -------
    ``(mean, valid)``, both ``(B, G')``: ``valid`` is ``False`` where no neighbour observed
    the gene (``mean`` is 0 there).
    """
    weights = reference.values.new_zeros(len(neighbours), len(reference.values))
    weights.scatter_(1, neighbours, 1.0)
    total = weights.new_zeros(len(neighbours), reference.values.shape[1])
    count = torch.zeros_like(total)
    for start in range(0, len(reference.values), REFERENCE_CHUNK):
        rows = slice(start, start + REFERENCE_CHUNK)
        total += weights[:, rows] @ reference.values[rows]
        count += weights[:, rows] @ reference.observed[rows].to(total.dtype)
    return total[:, gene_idx] / count[:, gene_idx].clamp_min(1), count[:, gene_idx] > 0


def blend_weight(
    observed_fraction: torch.Tensor, blend: dict[str, list[float]] | None
) -> torch.Tensor:
    """Weight of the neighbour mean for samples with the given share of observed genes.

    Parameters
    ----------
    observed_fraction
        ``(B,)`` share of the model's genes each sample has.
    blend
        The fitted weights (``{"observed_fraction": [...], "weight": [...]}``, fractions
        increasing), interpolated linearly and held constant beyond the ends; ``None``: 0.

    Returns
    -------
    ``(B,)`` weights in [0, 1].
    """
    if blend is None:
        return torch.zeros_like(observed_fraction)
    weights = np.interp(
        observed_fraction.double().cpu().numpy(), blend["observed_fraction"], blend["weight"]
    )
    return torch.as_tensor(weights, dtype=observed_fraction.dtype, device=observed_fraction.device)


def blend_sums(
    decoded: torch.Tensor, neighbours: torch.Tensor, truth: torch.Tensor
) -> tuple[float, float]:
    """Sum what :func:`best_blend_weight` needs over a set of hidden entries.

    Parameters
    ----------
    decoded, neighbours, truth
        The decoder's restorations ``d``, the neighbours' means ``n`` and the true values
        ``t`` of the same hidden entries (any shape).

    Returns
    -------
    ``(sum((t - d) (n - d)), sum((n - d)^2))``.
    """
    difference = (neighbours - decoded).double()
    return (
        float(((truth - decoded).double() * difference).sum()),
        float((difference * difference).sum()),
    )


def best_blend_weight(numerator: float, denominator: float) -> float:
    """Return the ``w`` in [0, 1] minimising the squared error of ``(1 - w) d + w n``.

    Parameters
    ----------
    numerator, denominator
        :func:`blend_sums` over the hidden entries (added up over minibatches).

    Returns
    -------
    The weight (0 when the two restorations agree everywhere).
    """
    if denominator == 0.0:
        return 0.0
    return float(np.clip(numerator / denominator, 0.0, 1.0))
