"""Tests for reading a query from another technology: match_scale of align_genes."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gexbert_sc import GexBERT
from gexbert_sc.data import align_genes
from gexbert_sc.data._scale_matching import match_scale_values


def _reference(n_obs: int = 400, n_vars: int = 12, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    x = np.log1p(rng.gamma(0.6, 4.0, size=(n_obs, n_vars))).astype(np.float32)
    x[rng.random(x.shape) < 0.3] = 0.0  # dropout zeros, as scRNA-seq
    return ad.AnnData(x, var=pd.DataFrame(index=[f"g{i}" for i in range(n_vars)]))


def _query(reference: ad.AnnData, transform) -> ad.AnnData:
    """The reference's own cells measured on another scale, on a panel of 8 genes."""
    panel = reference[:, :8].copy()
    panel.X = transform(np.asarray(panel.X, dtype=np.float64))
    return panel


def test_standardise_undoes_an_affine_transform():
    reference = _reference()
    query = _query(reference, lambda x: 3.5 * x + 10.0)
    matched = align_genes(
        query, reference.var_names, match_scale="standardise", scale_reference=reference
    )
    np.testing.assert_allclose(matched.X[:, :8], reference.X[:, :8], atol=1e-5)
    assert np.isnan(matched.X[:, 8:]).all()  # the model's other genes stay missing
    assert matched.uns["gexbert_alignment"]["scale_matching"] == "standardise"


def test_quantile_undoes_a_monotone_transform():
    reference = _reference()
    query = _query(reference, lambda x: np.exp(2.0 * x) + 0.1)  # monotone, not affine
    matched = align_genes(
        query, reference.var_names, match_scale="quantile", scale_reference=reference
    )
    truth = reference.X[:, :8]
    error = np.abs(matched.X[:, :8] - truth)
    # equal up to the interpolation between neighbouring order statistics
    assert np.median(error) < 1e-2
    for j in range(8):
        assert np.corrcoef(matched.X[:, j], truth[:, j])[0, 1] > 0.999
    # standardisation cannot undo it
    standardised = align_genes(
        query, reference.var_names, match_scale="standardise", scale_reference=reference
    )
    assert np.abs(standardised.X[:, :8] - truth).mean() > 5 * error.mean()


def test_quantile_matching_on_other_cells_matches_distributions():
    reference = _reference(n_obs=2000, seed=0)
    other = _reference(n_obs=500, seed=1)
    query = _query(other, lambda x: 7.0 * np.sqrt(x))
    matched = align_genes(
        query, reference.var_names, match_scale="quantile", scale_reference=reference
    )
    for q in (0.25, 0.5, 0.9):
        np.testing.assert_allclose(
            np.quantile(matched.X[:, :8], q, axis=0),
            np.quantile(reference.X[:, :8], q, axis=0),
            atol=0.08,
        )


def test_missing_values_stay_missing_and_input_is_unchanged():
    reference = _reference()
    query = _query(reference, lambda x: 2 * x)
    query.X[::3, 1] = np.nan
    before = query.X.copy()
    matched = align_genes(
        query, reference.var_names, match_scale="quantile", scale_reference=reference
    )
    assert np.array_equal(np.isnan(matched.X[:, 1]), np.isnan(before[:, 1]))
    np.testing.assert_array_equal(query.X, before)


def test_sparse_query_and_ties_share_one_reference_quantile():
    reference = _reference()
    values = np.zeros((100, 2))
    values[:40, 0] = np.arange(1, 41)
    values[:, 1] = 5.0  # one value: every sample at the median
    matched = match_scale_values(
        values, np.asarray(reference.X[:, :2], float), "quantile", ["g0", "g1"]
    )
    assert np.unique(matched[40:, 0]).size == 1  # the 60 zeros tie
    np.testing.assert_allclose(matched[:, 1], np.median(reference.X[:, 1]), atol=0.05)
    query = ad.AnnData(
        sp.csr_matrix(values.astype(np.float32)), var=pd.DataFrame(index=["g0", "g1"])
    )
    dense = align_genes(
        query, reference.var_names, match_scale="quantile", scale_reference=reference
    )
    assert isinstance(dense.X, np.ndarray)
    np.testing.assert_allclose(dense.X[:, :2], matched, rtol=1e-6)


def test_backed_reference_and_query_match_as_in_memory(tmp_path):
    reference = _reference()
    query = _query(reference, lambda x: np.exp(x))
    query.X = query.X.astype(np.float32)
    expected = align_genes(
        query, reference.var_names, match_scale="quantile", scale_reference=reference
    ).X
    reference.write_h5ad(tmp_path / "reference.h5ad")
    query.write_h5ad(tmp_path / "query.h5ad")
    backed = align_genes(
        ad.read_h5ad(tmp_path / "query.h5ad", backed="r"),
        reference.var_names,
        match_scale="quantile",
        scale_reference=ad.read_h5ad(tmp_path / "reference.h5ad", backed="r"),
    )
    np.testing.assert_allclose(backed.X, expected, rtol=1e-6, equal_nan=True)


def test_masked_reference_entries_are_not_reference_values():
    """A model's missing_layer: its placeholder values must not count as reference values."""
    rng = np.random.default_rng(3)
    values = rng.normal(5.0, 1.0, size=(300, 10)).astype(np.float32)
    hidden = rng.random(values.shape) < 0.5
    stored = np.where(hidden, 0.0, values).astype(np.float32)  # placeholders, flagged missing
    adata = ad.AnnData(stored, var=pd.DataFrame(index=[f"g{i}" for i in range(10)]))
    adata.layers["missing"] = hidden
    GexBERT.setup_anndata(adata, missing_layer="missing", input_scale="log")
    model = GexBERT(adata, d_model=16, n_layers=1, n_heads=2, n_levels=8, n_context=8)
    query = ad.AnnData(
        rng.normal(0.0, 1.0, size=(200, 10)).astype(np.float32), var=adata.var.copy()
    )
    matched = align_genes(query, model, match_scale="standardise")
    observed_mean = np.nanmean(np.where(hidden, np.nan, values), axis=0)
    np.testing.assert_allclose(matched.X.mean(axis=0), observed_mean, atol=1e-3)


def test_infinite_query_values_are_refused():
    reference = _reference()
    with np.errstate(divide="ignore"):
        query = _query(reference, lambda x: np.log(x))  # log(0) = -inf
    assert np.isinf(query.X).any()
    with pytest.raises(ValueError, match="infinite values in .* shared genes"):
        align_genes(
            query, reference.var_names, match_scale="standardise", scale_reference=reference
        )


def test_model_data_is_the_default_reference(log_adata):
    GexBERT.setup_anndata(log_adata)
    model = GexBERT(log_adata, d_model=16, n_layers=1, n_heads=2, n_levels=8, n_context=16)
    query = log_adata[:, :10].copy()
    query.X = 4.0 * np.asarray(query.X) + 1.0
    prepared = GexBERT.prepare_query_anndata(query, model, match_scale="standardise")
    np.testing.assert_allclose(prepared.X[:, :10], np.asarray(log_adata.X[:, :10]), atol=1e-4)
    assert "by quantile" in str(
        GexBERT.prepare_query_anndata(query, model, match_scale="quantile", return_report=True)[1]
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"match_scale": "zscore"}, ValueError, "`match_scale` must be None or one of"),
        ({"match_scale": "quantile"}, ValueError, "pass `scale_reference=`"),
        (
            {"match_scale": "quantile", "scale_reference": np.zeros((3, 3))},
            TypeError,
            "`scale_reference` must be an AnnData",
        ),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, match):
    reference = _reference()
    query = _query(reference, lambda x: x)
    before = query.X.copy()
    with pytest.raises(error, match=match):
        align_genes(query, reference.var_names, **kwargs)
    np.testing.assert_array_equal(query.X, before)


def test_reference_lacking_shared_genes_and_counts_model_are_refused(counts_adata):
    reference = _reference()
    query = _query(reference, lambda x: x)
    with pytest.raises(ValueError, match="lacks 2 of the 8 shared genes"):
        align_genes(
            query,
            reference.var_names,
            match_scale="quantile",
            scale_reference=reference[:, 2:].copy(),
        )
    GexBERT.setup_anndata(counts_adata)
    model = GexBERT(counts_adata, d_model=16, n_layers=1, n_heads=2, n_levels=8, n_context=16)
    panel = counts_adata[:, :5].copy()
    with pytest.raises(ValueError, match="trained on counts"):
        align_genes(panel, model, match_scale="quantile")
    empty = reference.copy()
    empty.X[:, 0] = np.nan
    with pytest.raises(ValueError, match="no observed value in the scale reference"):
        align_genes(query, reference.var_names, match_scale="quantile", scale_reference=empty)
    # a reference given beside a counts model does not make matched values counts
    with pytest.raises(ValueError, match="trained on counts"):
        align_genes(panel, model, match_scale="quantile", scale_reference=counts_adata)
    repeated = reference.copy()
    repeated.var_names = ["g0"] * 2 + list(reference.var_names[2:])
    with pytest.raises(ValueError, match="repeats gene names"):
        align_genes(query, reference.var_names, match_scale="quantile", scale_reference=repeated)
    without_x = ad.AnnData(obs=query.obs.copy(), var=query.var.copy())
    with pytest.raises(ValueError, match="`adata.X` is None"):
        align_genes(
            without_x, reference.var_names, match_scale="quantile", scale_reference=reference
        )
