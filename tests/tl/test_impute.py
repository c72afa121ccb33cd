import numpy as np
import pytest
from helpers import (
    TINY_MODEL,
    TINY_TRAIN,
    assert_fp32_path_close,
    fp32_path_close,
    make_counts_adata,
)

from gexbert_sc import GexBERT, tl
from gexbert_sc.metrics import mask_entries, masked_rmse


def test_impute_reads_the_missing_layer():
    adata = make_counts_adata(seed=2)
    flags = np.random.default_rng(2).random(adata.shape) < 0.2
    adata.layers["missing"] = flags
    GexBERT.setup_anndata(adata, missing_layer="missing")
    model = GexBERT(adata, **TINY_MODEL)
    model.train(**TINY_TRAIN)
    tl.impute(adata, model)
    np.testing.assert_array_equal(adata.layers["gexbert_imputed_mask"].toarray(), flags)
    imputed = adata.layers["gexbert_imputed"]
    np.testing.assert_array_equal(imputed[~flags], adata.X[~flags])
    # flagged entries hold (unused) counts in X: they are replaced, not kept
    assert not np.allclose(imputed[flags], adata.X[flags])


def test_impute_beats_per_gene_mean_on_low_rank_data():
    """Three cell groups (rank-3 programs): the restoration must use the observed genes."""
    adata = make_counts_adata(seed=0)
    adata.X = np.log1p(adata.X / adata.X.sum(1, keepdims=True) * 1e4)
    truth = adata.X
    adata.X, hidden = mask_entries(truth, 0.3, seed=0)
    GexBERT.setup_anndata(adata)
    model = GexBERT(adata, **TINY_MODEL)
    model.train(**{**TINY_TRAIN, "max_epochs": 10, "batch_size": 16, "lr": 5e-3})
    tl.impute(adata, model)
    model_rmse = masked_rmse(adata.layers["gexbert_imputed"], truth, hidden)
    gene_mean = np.broadcast_to(np.nanmean(adata.X, axis=0), truth.shape)
    mean_rmse = masked_rmse(gene_mean, truth, hidden)
    # measured 0.83 of the per-gene mean's RMSE; a model that learned nothing gives 1.0
    assert model_rmse < 0.9 * mean_rmse


def test_spread_of_restorations(trained_model):
    adata = trained_model.adata.copy()
    missing = np.isnan(adata.X)
    tl.impute(adata, trained_model)
    deterministic = adata.layers["gexbert_imputed"].copy()
    tl.impute(adata, trained_model, n_samples=4, seed=1, batch_size=50)
    std = adata.layers["gexbert_imputed_std"]
    assert std.shape == adata.shape and std.dtype == np.float32
    assert np.isfinite(std).all() and (std >= 0).all()
    # the imputed values themselves stay those of the deterministic path (at batch size
    # 50 here: equal up to fp32 rounding)
    assert_fp32_path_close(adata.layers["gexbert_imputed"], deterministic)
    # kept observations carry no spread; imputed entries do
    assert (std[~missing] == 0).all()
    assert (std[missing] > 0).mean() > 0.9
    assert adata.uns["gexbert"]["outputs"]["gexbert_imputed"]["params"]["n_samples"] == 4
    again = tl.impute(adata, trained_model, n_samples=4, seed=1, batch_size=50, copy=True)
    np.testing.assert_array_equal(again.layers["gexbert_imputed_std"], std)
    other = tl.impute(adata, trained_model, n_samples=4, seed=2, batch_size=50, copy=True)
    assert not fp32_path_close(other.layers["gexbert_imputed_std"], std)
    restored = tl.impute(adata, trained_model, n_samples=4, keep_observed=False, copy=True)
    assert (restored.layers["gexbert_imputed_std"][~missing] > 0).mean() > 0.9


@pytest.mark.parametrize("n_samples", [1, 0, 2.5, True])
def test_bad_n_samples_is_refused(trained_model, n_samples):
    adata = trained_model.adata.copy()
    with pytest.raises(ValueError, match="`n_samples` must be an integer of at least 2"):
        tl.impute(adata, trained_model, n_samples=n_samples)
    assert "gexbert_imputed" not in adata.layers


def test_impute_of_some_genes_keeps_the_rest_as_measured():
    """With `genes=`, the other genes keep their values; flagged entries there become NaN."""
    adata = make_counts_adata(seed=4)
    flags = np.random.default_rng(4).random(adata.shape) < 0.2
    adata.layers["missing"] = flags
    GexBERT.setup_anndata(adata, missing_layer="missing")
    model = GexBERT(adata, **TINY_MODEL)
    model.train(**TINY_TRAIN)
    genes = ["gene_3", "gene_7"]
    tl.impute(adata, model, genes=genes)
    values = adata.layers["gexbert_imputed"]
    asked = adata.var_names.isin(genes)
    others = ~asked[None, :] & np.ones_like(flags)
    np.testing.assert_array_equal(values[others & ~flags], adata.X[others & ~flags])
    assert np.isnan(values[others & flags]).all()
    assert np.isfinite(values[:, asked]).all()
    mask = adata.layers["gexbert_imputed_mask"].toarray()
    np.testing.assert_array_equal(mask, flags & asked[None, :])


def test_reference_blend_can_be_turned_off_and_is_recorded(trained_model):
    adata = trained_model.adata.copy()
    missing = np.isnan(adata.X)
    decoder = tl.impute(adata, trained_model, reference_blend=False, copy=True)
    params = decoder.uns["gexbert"]["outputs"]["gexbert_imputed"]["params"]
    assert params["reference_blend"] is False
    expected = trained_model.get_imputed_expression(adata, reference_blend=False)
    np.testing.assert_array_equal(decoder.layers["gexbert_imputed"], expected.to_numpy())
    blended = tl.impute(adata, trained_model, copy=True)
    assert blended.uns["gexbert"]["outputs"]["gexbert_imputed"]["params"]["reference_blend"]
    moved = blended.layers["gexbert_imputed"] != decoder.layers["gexbert_imputed"]
    assert moved[missing].mean() > 0.9 and not moved[~missing].any()
