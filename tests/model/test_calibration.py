"""Calibrated intervals: coverage on data with known noise, bounds, save / load, refusals."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from helpers import TINY_MODEL, TINY_TRAIN, make_counts_adata

from gexbert_sc import GexBERT, tl
from gexbert_sc.metrics import (
    calibration_curve,
    interval_coverage,
    interval_width,
    mask_entries,
    worst_gene_coverage,
)
from gexbert_sc.model.base._conformal import (
    MIN_BIN_ENTRIES,
    EntryFeatures,
    bin_quantiles,
    check_coverage,
    difficulty,
    fit_calibration,
    level_edges,
)

N_GENES = 30


def noisy_log_data(n_obs: int, seed: int) -> ad.AnnData:
    """Log-scale values: a rank-3 signal plus Gaussian noise of known, gene-specific sd."""
    rng = np.random.default_rng(0)
    loadings = rng.normal(size=(3, N_GENES))
    noise_sd = np.linspace(0.1, 0.8, N_GENES)
    sample = np.random.default_rng(seed)
    signal = sample.normal(size=(n_obs, 3)) @ loadings * 0.6
    x = 4 + signal + sample.normal(size=(n_obs, N_GENES)) * noise_sd
    adata = ad.AnnData(x.astype(np.float32))
    adata.var_names = [f"g{j}" for j in range(N_GENES)]
    adata.obs_names = [f"s{seed}_{i}" for i in range(n_obs)]
    return adata


@pytest.fixture(scope="module")
def noisy_model():
    """A tiny model on 400 noisy samples, recalibrated on 400 others (shared, do not mutate).

    Its 40 validation samples would calibrate it too, with more noise in the coverage.
    """
    train = noisy_log_data(400, seed=1)
    GexBERT.setup_anndata(train)
    model = GexBERT(train, **TINY_MODEL)
    model.train(**{**TINY_TRAIN, "max_epochs": 8, "lr": 5e-3})
    model.calibrate(noisy_log_data(400, seed=2))
    return model


# ---------------------------------------------------------------- the conformal machinery


def synthetic_features(n: int, rng: np.random.Generator) -> EntryFeatures:
    gene = rng.integers(0, 4, n)
    share = rng.choice([0.1, 0.5, 0.9], n)
    return EntryFeatures(gene, share, rng.normal(size=n), np.abs(rng.normal(size=n)))


def fit_synthetic(features, truth, rng_shares):
    return fit_calibration(
        features,
        truth,
        rng_shares,
        np.zeros(4),
        np.ones(4),
        floor=-np.inf,
        reference_blend=False,
        schemes=["synthetic"],
        n_samples=1,
    )


def test_intervals_hold_their_coverage_on_known_noise_per_gene_and_level():
    """Noise whose scale depends on the gene and the level: coverage holds in every bin."""
    rng = np.random.default_rng(0)
    scale = np.array([0.2, 0.5, 1.0, 2.0])

    def draw(n):
        features = synthetic_features(n, rng)
        sd = scale[features.gene] * (1 + 2 * (features.share < 0.3))
        return features, features.value + rng.standard_t(5, n) * sd

    features, truth = draw(60_000)
    calibration = fit_synthetic(features, truth, [np.array([0.1]), np.array([0.5, 0.9])])
    test, test_truth = draw(60_000)
    for coverage in (0.5, 0.8, 0.9, 0.95):
        [(lower, upper)] = calibration.intervals(test, [coverage])
        inside = (test_truth >= lower) & (test_truth <= upper)
        for gene in range(4):
            for low_share in (True, False):
                cell = (test.gene == gene) & ((test.share < 0.3) == low_share)
                # about 5,000 entries per cell on both sides: sd of the difference about 0.01
                assert abs(inside[cell].mean() - coverage) < 0.04, (coverage, gene, low_share)


def test_split_conformal_rank_is_exact_and_bins_fall_back_when_small():
    rng = np.random.default_rng(1)
    n = MIN_BIN_ENTRIES + 11
    scores = rng.normal(size=n)
    index = np.zeros(n, dtype=np.int64)
    index[:10] = 1  # bin 1: 10 scores, below MIN_BIN_ENTRIES
    counts, slots, quantiles = bin_quantiles(scores, index, 3)
    np.testing.assert_array_equal(counts, [n - 10, 10, 0])
    # only the full bin stores quantiles
    np.testing.assert_array_equal(slots, [0, -1, -1])
    assert quantiles.shape == (1, 201)
    full = scores[10:]
    np.testing.assert_allclose(quantiles[0, [0, -1]], [full.min(), full.max()], rtol=1e-6)
    np.testing.assert_allclose(quantiles[0, 100], np.median(full), rtol=1e-5, atol=1e-6)


def test_upper_bound_is_the_conformal_order_statistic():
    """With n = 2 * (N_QUANTILES - 1) / 2 + 1 scores the stored grid holds every other rank."""
    rng = np.random.default_rng(2)
    n = 201
    features = EntryFeatures(np.zeros(n, dtype=np.int64), np.full(n, 0.5), np.zeros(n), np.zeros(n))
    truth = rng.normal(size=n)
    calibration = fit_synthetic(features, truth, [np.array([0.5])])
    sigma = difficulty(calibration, features, np.zeros(n, dtype=np.int64))
    scores = np.sort(truth / sigma)
    _, high = calibration.offsets(np.zeros(1, np.int64), np.zeros(1, np.int64), 0.9)
    rank = int(np.ceil((n + 1) * 0.95))
    np.testing.assert_allclose(high[0], scores[rank - 1], rtol=1e-5)


def test_difficulty_never_extrapolates_beyond_the_calibrated_range():
    """A value far outside its gene's calibrated range keeps a bounded interval."""
    rng = np.random.default_rng(3)
    features = synthetic_features(5_000, rng)
    calibration = fit_synthetic(
        features, features.value + rng.normal(size=5_000), [np.array([0.5])]
    )
    extreme = EntryFeatures(
        np.array([0, 1]), np.array([0.5, 0.5]), np.array([1e6, -1e6]), np.array([1e6, 0.0])
    )
    assert np.isfinite(difficulty(calibration, extreme, np.zeros(2, dtype=np.int64))).all()
    [(lower, upper)] = calibration.intervals(extreme, [0.9])
    assert np.all(upper - lower < 50)


def test_levels_group_schemes_of_similar_observed_share():
    edges, shares = level_edges([np.array([0.1]), np.array([0.11]), np.array([0.5, 0.5])])
    assert len(shares) == 2 and len(edges) == 1
    assert 0.11 < edges[0] < 0.5


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "0.9", True, [], [0.5, 2.0]])
def test_coverage_outside_the_open_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match="coverage"):
        check_coverage(bad)


# ---------------------------------------------------------------- the model


def test_calibrated_model_covers_held_out_entries(noisy_model):
    assert noisy_model.calibration_["n_samples"] == 400
    test = noisy_log_data(300, seed=3)
    for rate in (0.2, 0.8):
        masked, hidden = mask_entries(test.X, rate, seed=4)
        result = noisy_model.impute_expression(
            ad.AnnData(masked, var=test.var), coverage=[0.8, 0.9]
        )
        for i, coverage in enumerate((0.8, 0.9)):
            empirical = interval_coverage(test.X, result.lower[i], result.upper[i], hidden)
            assert abs(empirical - coverage) < 0.05, (rate, coverage, empirical)
        # nested: the 90 % interval contains the 80 % one
        assert np.all(result.lower[1] <= result.lower[0] + 1e-6)
        assert np.all(result.upper[1] >= result.upper[0] - 1e-6)


def test_observed_entries_are_their_own_interval(noisy_model):
    test = noisy_log_data(50, seed=5)
    masked, hidden = mask_entries(test.X, 0.5, seed=6)
    result = noisy_model.impute_expression(ad.AnnData(masked, var=test.var), coverage=0.9)
    assert result.lower.shape == result.values.shape == result.upper.shape
    observed = ~hidden
    np.testing.assert_array_equal(result.lower[observed], test.X[observed])
    np.testing.assert_array_equal(result.upper[observed], test.X[observed])
    assert np.all(result.lower <= result.values) and np.all(result.values <= result.upper)
    assert np.all(result.upper[hidden] - result.lower[hidden] > 0)
    # no coverage: no bounds
    plain = noisy_model.impute_expression(ad.AnnData(masked, var=test.var))
    assert plain.lower is None and plain.upper is None
    np.testing.assert_array_equal(plain.values, result.values)


def test_save_and_load_keep_the_calibration(noisy_model, tmp_path):
    test = noisy_log_data(40, seed=7)
    query = ad.AnnData(mask_entries(test.X, 0.5, seed=8)[0], var=test.var)
    before = noisy_model.impute_expression(query, coverage=0.9)
    noisy_model.save(tmp_path / "model", save_anndata=True)
    loaded = GexBERT.load(tmp_path / "model")
    after = loaded.impute_expression(query, coverage=0.9)
    np.testing.assert_array_equal(before.lower, after.lower)
    np.testing.assert_array_equal(before.upper, after.upper)


def test_counts_model_intervals_are_on_the_counts_scale_and_non_negative():
    adata = make_counts_adata(n_obs=200, seed=3)
    GexBERT.setup_anndata(adata)
    model = GexBERT(adata, **TINY_MODEL)
    model.train(**TINY_TRAIN)
    # train() calibrates on its validation samples
    assert model.calibration_["n_samples"] == len(model.validation_indices) > 0
    assert model.calibration_["floor"] == 0.0
    truth = make_counts_adata(n_obs=40, seed=4).X
    masked, hidden = mask_entries(truth, 0.5, seed=0)
    result = model.impute_expression(ad.AnnData(masked, var=adata.var), coverage=0.9)
    assert np.all(result.lower >= 0)
    assert np.all(result.lower <= result.values) and np.all(result.values <= result.upper)
    # intervals on expected counts, not on the log scale: wider than a unit for deep genes
    assert np.median(result.upper[hidden] - result.lower[hidden]) > 1


def test_uncalibrated_model_refuses_coverage_and_calibrate_needs_data():
    adata = noisy_log_data(60, seed=9)
    GexBERT.setup_anndata(adata)
    model = GexBERT(adata, **TINY_MODEL)
    model.train(**{**TINY_TRAIN, "train_size": 1.0})
    assert model.calibration_ is None
    before = adata.X.copy()
    with pytest.raises(ValueError, match="no calibrated intervals"):
        model.impute_expression(adata, coverage=0.9)
    with pytest.raises(ValueError, match="no validation samples"):
        model.calibrate()
    np.testing.assert_array_equal(adata.X, before)
    model.calibrate(noisy_log_data(60, seed=10))
    assert model.impute_expression(adata, coverage=0.9).lower is not None


def test_calibration_data_without_hidden_entries_is_refused(noisy_model):
    empty = noisy_log_data(20, seed=11)
    empty.X[:] = np.nan
    with pytest.raises(ValueError, match="No entry could be hidden"):
        noisy_model.calibrate(empty)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rates": (0.0,)}, "rates"),
        ({"rates": (1.2,)}, "rates"),
        ({"panel_sizes": (0,)}, "panel_sizes"),
        ({"rates": (), "panel_sizes": ()}, "both empty"),
        ({"max_samples": 0}, "max_samples"),
        ({"indices": []}, "empty"),
    ],
)
def test_bad_calibration_arguments_are_refused(noisy_model, kwargs, match):
    stored = noisy_model.calibration_
    with pytest.raises(ValueError, match=match):
        noisy_model.calibrate(noisy_log_data(20, seed=12), **kwargs)
    assert noisy_model.calibration_ is stored


def test_coverage_needs_the_blend_it_was_calibrated_with(noisy_model):
    with pytest.raises(ValueError, match="reference_blend"):
        noisy_model.impute_expression(coverage=0.9, reference_blend=False)


# ---------------------------------------------------------------- tl, metrics, pl


def test_tl_impute_writes_bounds_and_records_coverage(noisy_model):
    test = noisy_log_data(30, seed=13)
    adata = ad.AnnData(mask_entries(test.X, 0.5, seed=14)[0], var=test.var)
    tl.impute(adata, noisy_model, coverage=0.8)
    lower, upper = adata.layers["gexbert_imputed_lower"], adata.layers["gexbert_imputed_upper"]
    expected = noisy_model.impute_expression(adata, coverage=0.8)
    np.testing.assert_array_equal(lower, expected.lower)
    np.testing.assert_array_equal(upper, expected.upper)
    params = adata.uns["gexbert"]["outputs"]["gexbert_imputed"]["params"]
    assert params["coverage"] == 0.8
    assert {"gexbert_imputed_lower", "gexbert_imputed_upper"} <= set(params["layers"])
    # a subset of genes: bounds only there, the input elsewhere
    tl.impute(adata, noisy_model, genes=["g0", "g1"], coverage=0.8, key_added="two")
    nan = np.isnan(adata.X[:, 2:])
    np.testing.assert_array_equal(np.isnan(adata.layers["two_lower"][:, 2:]), nan)
    assert not np.isnan(adata.layers["two_lower"][:, :2]).any()


def test_tl_impute_refuses_several_coverages_and_leaves_adata_unchanged(noisy_model):
    adata = noisy_log_data(10, seed=15)
    before = adata.copy()
    with pytest.raises(ValueError, match="one number"):
        tl.impute(adata, noisy_model, coverage=[0.8, 0.9])
    with pytest.raises(ValueError, match="coverage"):
        tl.impute(adata, noisy_model, coverage=1.0)
    assert list(adata.layers) == list(before.layers) and "gexbert" not in adata.uns


def test_interval_metrics_match_hand_computation():
    truth = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    lower = truth - np.array([[1, -1], [1, 1], [-1, 1]])
    upper = truth + 1
    mask = np.array([[True, True], [True, False], [True, True]])
    assert interval_coverage(truth, lower, upper, mask) == pytest.approx(3 / 5)
    np.testing.assert_allclose(
        interval_coverage(truth, lower, upper, mask, per_gene=True), [2 / 3, 1 / 2]
    )
    assert interval_width(lower, upper, mask) == pytest.approx((2 + 0 + 2 + 0 + 2) / 5)
    assert worst_gene_coverage(truth, lower, upper, mask, min_entries=2) == pytest.approx(0.5)
    assert np.isnan(worst_gene_coverage(truth, lower, upper, mask, min_entries=4))


def test_interval_metrics_refuse_bad_input():
    ones = np.ones((2, 2))
    with pytest.raises(ValueError, match="one shape"):
        interval_coverage(ones, ones, np.ones((2, 3)), np.ones((2, 2), bool))
    with pytest.raises(TypeError, match="boolean"):
        interval_width(ones, ones, ones)
    with pytest.raises(ValueError, match="no entry"):
        interval_width(ones, ones, np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="NaN"):
        interval_coverage(ones, np.full((2, 2), np.nan), ones, np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="share"):
        worst_gene_coverage(ones, ones, ones, np.ones((2, 2), bool), share=0)


def test_calibration_curve_scores_every_level_without_changing_adata(noisy_model):
    test = noisy_log_data(80, seed=16)
    before = test.X.copy()
    curve = calibration_curve(
        noisy_model, test, rates=(0.5,), panel_sizes=(5,), coverages=(0.5, 0.9)
    )
    np.testing.assert_array_equal(test.X, before)
    assert list(curve["missingness"].unique()) == ["random 50 %", "panel 5 genes"]
    assert set(curve["nominal"]) == {0.5, 0.9}
    assert (curve["n_entries"] > 0).all()
    panel = curve[curve["missingness"] == "panel 5 genes"]
    assert panel["observed_share"].iloc[0] == pytest.approx(5 / N_GENES)
    # wider intervals hold more
    for _, rows in curve.groupby("missingness"):
        assert rows.sort_values("nominal")["empirical"].is_monotonic_increasing
    with pytest.raises(ValueError, match="panel_sizes"):
        calibration_curve(noisy_model, test, panel_sizes=(0,))


def test_pl_calibration_draws_one_line_per_missingness(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gexbert_sc import pl

    curve = pd.DataFrame(
        {
            "missingness": ["random 10 %"] * 2 + ["panel 16 genes"] * 2,
            "nominal": [0.5, 0.9, 0.5, 0.9],
            "empirical": [0.52, 0.88, 0.45, 0.86],
        }
    )
    ax = pl.calibration(curve, show=False)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["random 10 %", "panel 16 genes", "calibrated"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.52, 0.88])
    plt.close("all")
    pl.calibration(curve, save=tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0
    plt.close("all")
    with pytest.raises(ValueError, match="calibration_curve"):
        pl.calibration(curve.drop(columns="empirical"))
