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


def make_survival_adata(
    n_obs: int = 200, n_vars: int = 30, n_drivers: int = 3, seed: int = 0
) -> ad.AnnData:
    """Log-scale bulk profiles of co-varying genes; the first ``n_drivers`` genes drive hazard.

    Genes share three latent programmes (so a model can restore one gene from others); the
    driver genes follow them weakly and carry mostly a signal of their own, and the log
    hazard is the sum of their standardised values; times to the event are exponential and
    censoring times uniform. ``obs`` holds ``time``, ``event`` (0/1) and the true
    ``log_hazard``; ``var["driver"]`` flags the driver genes.
    """
    rng = np.random.default_rng(seed)
    programmes = rng.normal(size=(n_obs, 3))
    loadings = rng.normal(size=(3, n_vars))
    values = 6.0 + programmes @ loadings * 0.5 + rng.normal(scale=0.3, size=(n_obs, n_vars))
    shared = values[:, :n_drivers] - 6.0
    own = rng.normal(scale=1.0, size=(n_obs, n_drivers))
    values[:, :n_drivers] = 6.0 + 0.3 * shared + own
    drivers = values[:, :n_drivers]
    log_hazard = ((drivers - drivers.mean(0)) / drivers.std(0)).sum(axis=1)
    event_time = rng.exponential(np.exp(-log_hazard))
    censor_time = rng.uniform(0, 3.0, n_obs)
    obs = pd.DataFrame(
        {
            "time": np.minimum(event_time, censor_time),
            "event": (event_time <= censor_time).astype(int),
            "log_hazard": log_hazard,
        },
        index=[f"patient_{i}" for i in range(n_obs)],
    )
    var = pd.DataFrame(
        {"driver": np.arange(n_vars) < n_drivers}, index=[f"gene_{j}" for j in range(n_vars)]
    )
    return ad.AnnData(values.astype(np.float32), obs=obs, var=var)
