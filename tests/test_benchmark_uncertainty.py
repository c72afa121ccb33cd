"""The uncertainty benchmark (``benchmarks/uncertainty.py``): its conditions and baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import benchmark_script


@pytest.fixture(scope="module")
def uncertainty():
    with benchmark_script("uncertainty") as module:
        yield module


def _low_rank(n_obs: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    loadings = np.random.default_rng(0).normal(size=(2, 20))
    return (3 + rng.normal(size=(n_obs, 2)) @ loadings + rng.normal(size=(n_obs, 20)) * 0.3).astype(
        np.float32
    )


def test_conditions_hide_at_random_and_by_fixed_panels(uncertainty):
    x = _low_rank(50, 0)
    conditions = dict(uncertainty.conditions(x.shape[1], seed=0))
    # the 64-gene panel is left out of 20 genes; the 16-gene one too (not under half)
    assert list(conditions) == [f"random {r * 100:g} %" for r in uncertainty.RATES]
    masked, hidden = conditions["random 50 %"](x, 3)
    assert 0.4 < hidden.mean() < 0.6 and np.isnan(masked[hidden]).all()
    wide = dict(uncertainty.conditions(200, seed=0))
    panel = wide["panel 16 genes"]
    masked, hidden = panel(_low_rank(5, 1).repeat(10, axis=1), 0)
    kept = np.flatnonzero(~hidden[0])
    assert len(kept) == 16 and (~hidden[:, kept]).all()
    # the same panel whatever the draw: calibration and test samples lose the same genes
    np.testing.assert_array_equal(panel(np.ones_like(masked), 7)[1][0], hidden[0])


def test_knn_conformal_intervals_cover_at_the_nominal_level(uncertainty):
    reference, calibration, test = _low_rank(200, 1), _low_rank(300, 2), _low_rank(300, 3)
    hide = dict(uncertainty.conditions(20, seed=0))["random 30 %"]
    masked, hidden = hide(test, 0)
    bounds, _ = uncertainty.knn_conformal_bounds(
        reference, calibration, masked, hide(calibration, 1), [0.8, 0.9], -np.inf
    )
    for level, (lower, upper) in bounds.items():
        inside = ((test >= lower) & (test <= upper))[hidden].mean()
        assert abs(inside - level) < 0.04, (level, inside)
    # the floor bounds the lower end
    floored, _ = uncertainty.knn_conformal_bounds(
        reference, calibration, masked, hide(calibration, 1), [0.9], 5.0
    )
    assert floored[0.9][0].min() >= 5.0


def test_conformal_quantile_rank_and_noise_floor(uncertainty):
    residuals = np.arange(1.0, 20.0)  # 19 values: the 90 % rank is ceil(20 * 0.9) = 18
    assert uncertainty.conformal_quantile(residuals, 0.9) == 18.0
    assert uncertainty.conformal_quantile(residuals[:5], 0.9) == np.inf
    hidden = np.ones((40, 50), dtype=bool)
    floor = uncertainty.noise_floor(hidden, 0.9)
    # perfect calibration still shows a worst decile below nominal with 40 entries per gene
    assert 0.75 < floor < 0.88
    assert np.isnan(uncertainty.noise_floor(hidden[:10], 0.9))


def test_quantiles_from_intervals_are_ordered(uncertainty):
    bounds = {c: (np.full(3, -c), np.full(3, c)) for c in uncertainty.CRPS_COVERAGES}
    quantiles = uncertainty.bounds_to_quantiles(bounds)
    assert quantiles.shape == (3, 2 * len(uncertainty.CRPS_COVERAGES))
    assert (np.diff(quantiles, axis=-1) >= 0).all()
    np.testing.assert_allclose(uncertainty.quantile_levels(), np.arange(0.05, 1.0, 0.1))


def test_summary_checks_the_goals(uncertainty):
    rows = []
    for method, coverage, width in (("GexBERT", 0.905, 1.0), ("KNNImputer + conformal", 0.9, 2.0)):
        rows.append(
            {
                "dataset": "d",
                "condition": "random 50 %",
                "method": method,
                "nominal": 0.9,
                "coverage": coverage,
                "worst_decile": 0.86,
                "worst_decile_noise": 0.85,
                "mean_width": width,
                "crps": 0.1,
            }
        )
    summary = uncertainty.summarise(pd.DataFrame(rows))
    assert summary["coverage_ok"].item() and summary["worst_ok"].item()
    assert summary["width_ratio"].item() == pytest.approx(0.5)
    lines = uncertainty.goal_lines(summary)
    assert "1 of 1 cases" in lines[0] and "1 of 1 cases" in lines[2]
