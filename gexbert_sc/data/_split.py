"""The default validation samples: held out of training and of the fitted statistics."""

from __future__ import annotations

import math

import numpy as np

#: Share of the samples held out for validation when ``train()`` is given no split, as
#: scvi-tools' default (``n_obs - ceil(0.9 n_obs)`` samples).
VALIDATION_SHARE = 0.1


def default_validation_indices(n_obs: int) -> np.ndarray:
    """Return the samples that ``train()`` validates on when it is given no split.

    They depend on the number of samples only (not on the model's seed), so every model of
    the family built on the same data, whatever its seed, holds out the same samples: the
    per-gene statistics of :class:`~gexbert_sc.GexBERT` are fitted without them, and its
    validation loss, its early stopping and its fitted restoration blend are measured on
    samples that no part of the model has seen.

    Parameters
    ----------
    n_obs
        Number of samples.

    Returns
    -------
    Sorted sample positions: ``n_obs - ceil(0.9 n_obs)`` of them (none below 10 samples).
    """
    n_validation = n_obs - math.ceil((1 - VALIDATION_SHARE) * n_obs)
    order = np.random.default_rng([0, n_obs]).permutation(n_obs)
    return np.sort(order[:n_validation])
