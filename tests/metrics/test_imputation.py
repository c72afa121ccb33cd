import re

import numpy as np
import pytest
import scipy.sparse as sp

from gexbert_sc.metrics import (
    gene_correlations,
    mask_entries,
    mask_genes,
    masked_rmse,
    median_gene_correlation,
)


@pytest.fixture
def values() -> np.ndarray:
    """200 × 50 float32 values, 10 % of them missing (NaN)."""
    rng = np.random.default_rng(42)
    x = rng.gamma(2.0, 1.0, size=(200, 50)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


def test_mask_entries_hides_only_observed_entries(values):
    """Already-missing entries are never in the mask; everything else is kept as it was."""
    masked, mask = mask_entries(values, 0.3, seed=0)
    assert not (mask & np.isnan(values)).any()
    assert np.isnan(masked[mask]).all()
    np.testing.assert_array_equal(masked[~mask], values[~mask])
    assert masked.dtype == np.float32 and masked is not values


def test_mask_entries_hides_the_seeded_draw_below_fraction(values):
    """Exactly the observed entries whose seeded uniform draw is below ``fraction``."""
    _, mask = mask_entries(values, 0.3, seed=7)
    drawn = np.random.default_rng(7).random(values.shape) < 0.3
    np.testing.assert_array_equal(mask, drawn & ~np.isnan(values))
    # 9,000 observed entries: a binomial count within 4 sd of 2,700
    n_observed = int((~np.isnan(values)).sum())
    assert abs(mask.sum() - 0.3 * n_observed) < 4 * np.sqrt(n_observed * 0.3 * 0.7)


def test_mask_entries_is_reproducible_and_seed_dependent(values):
    """The same seed hides the same entries; another seed hides others."""
    first, again, other = (mask_entries(values, 0.5, seed=s)[1] for s in (3, 3, 4))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_mask_entries_leaves_the_input_unchanged(values):
    before = values.copy()
    mask_entries(values, 0.5, seed=0)
    np.testing.assert_array_equal(values, before)


def test_masked_copy_is_c_ordered(values):
    """Whatever the input's memory order (downstream float reductions depend on it)."""
    masked, _ = mask_entries(np.asfortranarray(values), 0.3)
    assert masked.flags.c_contiguous
    np.testing.assert_array_equal(masked, mask_entries(values, 0.3)[0])


def test_mask_entries_converts_integers_to_float():
    masked, mask = mask_entries(np.arange(12).reshape(3, 4), 0.5, seed=1)
    assert masked.dtype == np.float64 and np.isnan(masked[mask]).all() and mask.any()


def test_mask_genes_hides_whole_genes_in_a_block_of_samples():
    """The hidden entries form the product of a sample set and a gene set."""
    x = np.ones((400, 60))
    masked, mask = mask_genes(x, 0.5, sample_fraction=0.5, seed=2)
    rows, genes = mask.any(axis=1), mask.any(axis=0)
    np.testing.assert_array_equal(mask, rows[:, None] & genes[None, :])
    assert 0.35 < rows.mean() < 0.65 and 0.3 < genes.mean() < 0.7
    assert np.isnan(masked[mask]).all() and (masked[~mask] == 1).all()


def test_mask_genes_draws_samples_then_genes():
    """The seeded stream: one draw per sample, then one per gene (benchmarks rely on it)."""
    rng = np.random.default_rng(5)
    rows, genes = rng.random(30) < 0.4, rng.random(20) < 0.25
    _, mask = mask_genes(np.zeros((30, 20)), 0.25, sample_fraction=0.4, seed=5)
    np.testing.assert_array_equal(mask, rows[:, None] & genes[None, :])


def test_mask_genes_all_samples_by_default(values):
    """With ``sample_fraction=1`` a hidden gene loses every observed entry."""
    _, mask = mask_genes(values, 0.2, seed=0)
    genes = mask.any(axis=0)
    np.testing.assert_array_equal(mask, genes[None, :] & ~np.isnan(values))


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, True, "0.3", float("nan")])
def test_fraction_outside_the_open_interval_is_refused(values, fraction):
    match = re.escape(f"`fraction` must be a number in (0, 1): got {fraction!r}.")
    with pytest.raises(ValueError, match=match):
        mask_entries(values, fraction)
    with pytest.raises(ValueError, match=match):
        mask_genes(values, fraction)


@pytest.mark.parametrize("sample_fraction", [0, 1.01])
def test_bad_sample_fraction_is_refused(values, sample_fraction):
    with pytest.raises(ValueError, match=r"`sample_fraction` must be a number in \(0, 1\]"):
        mask_genes(values, 0.5, sample_fraction=sample_fraction)


def test_bad_values_are_refused():
    with pytest.raises(TypeError, match=r"`values` is a sparse matrix; .*`values.toarray\(\)`"):
        mask_entries(sp.csr_matrix(np.eye(3)), 0.5)
    with pytest.raises(ValueError, match=r"`values` must be 2-D \(samples × genes\): got shape"):
        mask_entries(np.ones(5), 0.5)
    with pytest.raises(ValueError, match="`values` has no observed"):
        mask_genes(np.full((3, 3), np.nan), 0.5)
    with pytest.raises(TypeError, match="`values` must hold numbers: got dtype <U1"):
        mask_entries(np.array([["a", "b"]]), 0.5)
    with pytest.raises(ValueError, match="`seed` must be a non-negative integer: got -1"):
        mask_entries(np.ones((2, 2)), 0.5, seed=-1)


def test_masked_rmse_known_value():
    """Errors 3 and 4 on the masked entries, large errors elsewhere ignored."""
    truth = np.zeros((2, 3))
    filled = np.array([[3.0, 100.0, 0.0], [0.0, -4.0, 100.0]])
    mask = np.array([[True, False, False], [False, True, False]])
    assert masked_rmse(filled, truth, mask) == pytest.approx(np.sqrt(12.5))
    assert masked_rmse(truth, truth, mask) == 0.0


def test_masked_rmse_after_mask_entries(values):
    """A fill that is off by 0.5 on every hidden entry scores 0.5, whatever else it holds."""
    masked, mask = mask_entries(values, 0.3, seed=0)
    filled = np.where(mask, values + 0.5, -1.0)
    assert masked_rmse(filled, values, mask) == pytest.approx(0.5)


def test_median_gene_correlation_known_value():
    """Genes r = 1, -1 and 1 -> median 1; a constant fill and a short gene do not count."""
    truth = np.tile(np.arange(6.0)[:, None], (1, 5))
    filled = np.c_[truth[:, 0], -truth[:, 1], 2 * truth[:, 2] + 1, np.ones(6), truth[:, 4]]
    mask = np.ones_like(truth, dtype=bool)
    mask[2:, 4] = False  # 2 masked entries: below min_entries
    assert median_gene_correlation(filled, truth, mask, min_entries=3) == pytest.approx(1.0)
    assert median_gene_correlation(filled[:, :2], truth[:, :2], mask[:, :2]) == pytest.approx(0.0)


def test_median_gene_correlation_is_nan_when_no_gene_counts():
    truth = np.arange(8.0).reshape(4, 2)
    mask = np.ones_like(truth, dtype=bool)
    assert np.isnan(median_gene_correlation(truth, truth, mask, min_entries=5))
    assert np.isnan(median_gene_correlation(np.ones_like(truth), truth, mask, min_entries=2))


def test_median_gene_correlation_uses_only_masked_entries():
    """Unmasked entries that would break the correlation are ignored."""
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(40, 3))
    mask = rng.random(truth.shape) < 0.5
    filled = np.where(mask, truth, -truth)
    assert median_gene_correlation(filled, truth, mask) == pytest.approx(1.0)


@pytest.mark.parametrize("score", [masked_rmse, median_gene_correlation])
def test_scores_refuse_bad_inputs(score):
    truth = np.zeros((3, 2))
    mask = np.zeros((3, 2), dtype=bool)
    mask[0, 0] = True
    with pytest.raises(ValueError, match=re.escape("got (3, 2), (3, 2) and (2, 3)")):
        score(truth, truth, mask.T)
    with pytest.raises(TypeError, match="`mask` must be a boolean array .* got dtype int64"):
        score(truth, truth, mask.astype(np.int64))
    with pytest.raises(ValueError, match="`mask` selects no entry"):
        score(truth, truth, np.zeros_like(mask))
    filled = truth.copy()
    filled[0, 0] = np.nan
    with pytest.raises(ValueError, match="`filled` holds 1 NaN or infinite values at masked"):
        score(filled, truth, mask)
    with pytest.raises(ValueError, match="`truth` holds 1 NaN or infinite values at masked"):
        score(truth, filled, mask)
    with pytest.raises(TypeError, match="`truth` is a sparse matrix"):
        score(truth, sp.csr_matrix(truth), mask)


def test_min_entries_is_checked():
    truth = np.zeros((3, 2))
    with pytest.raises(ValueError, match="`min_entries` must be an integer of at least 2: got 1"):
        median_gene_correlation(truth, truth, np.ones_like(truth, dtype=bool), min_entries=1)


def test_gene_correlations_per_gene_and_nan_where_a_gene_does_not_count():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(20, 4))
    filled = truth.copy()
    filled[:, 1] *= -1
    filled[:, 2] = 7.0  # a constant fill has no correlation
    mask = np.ones_like(truth, dtype=bool)
    mask[:, 3] = False
    mask[:4, 3] = True  # too few masked entries
    r = gene_correlations(filled, truth, mask)
    np.testing.assert_allclose(r[:2], [1.0, -1.0])
    assert np.isnan(r[2:]).all()
    assert median_gene_correlation(filled, truth, mask) == pytest.approx(0.0)
