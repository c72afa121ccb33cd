"""Test helpers: tiny model settings and a synthetic counts AnnData."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

TINY_MODEL = {
    "d_model": 16,
    "n_layers": 1,
    "n_heads": 2,
    "n_levels": 8,
    "n_context": 24,
    "n_inference_context": 48,
}
TINY_TRAIN = {"max_epochs": 2, "batch_size": 32, "enable_progress_bar": False}


def make_counts_adata(
    n_obs: int = 120, n_vars: int = 40, n_groups: int = 3, seed: int = 0
) -> ad.AnnData:
    """Counts from a low-rank Poisson model with ``n_groups`` labelled cell groups."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_groups, n_obs)
    programs = rng.gamma(2.0, 1.0, size=(n_groups, n_vars))
    library = rng.lognormal(np.log(300), 0.3, size=n_obs)
    rates = programs[groups] / programs[groups].sum(1, keepdims=True) * library[:, None]
    counts = rng.poisson(rates).astype(np.float32)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type_{g}" for g in groups]),
            "batch": pd.Categorical(rng.choice(["a", "b"], n_obs)),
        },
        index=[f"cell_{i}" for i in range(n_obs)],
    )
    return ad.AnnData(counts, obs=obs, var=pd.DataFrame(index=[f"gene_{j}" for j in range(n_vars)]))
