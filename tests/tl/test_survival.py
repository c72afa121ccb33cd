"""Anchor genes: selection by univariate Cox, restoration of the anchors a panel missed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import TINY_MODEL, TINY_TRAIN, make_survival_adata

from gexbert_sc import GexBERT, tl


def test_anchor_selection_finds_the_driver_genes():
    adata = make_survival_adata()
    tl.select_anchor_genes(adata, "time", "event", n_genes=3)
    assert set(adata.var_names[adata.var["gexbert_anchor"]]) == {"gene_0", "gene_1", "gene_2"}
    entry = adata.uns["gexbert_anchor"]
    assert set(entry["genes"]) == {"gene_0", "gene_1", "gene_2"}
    assert entry["params"]["n_events"] == int(adata.obs["event"].sum())
    pvalues = adata.var["gexbert_anchor_pvalue"]
    # the anchors are the most significant genes, listed most significant first
    assert list(pvalues.nsmallest(3).index) == entry["genes"]
    # the drivers raise the hazard: positive statistics
    assert (adata.var.loc[entry["genes"], "gexbert_anchor_z"] > 0).all()


def test_anchors_are_ranked_on_the_samples_given_only():
    adata = make_survival_adata()
    train = np.arange(adata.n_obs) < 150
    result = tl.select_anchor_genes(adata, "time", "event", n_genes=5, samples=train, copy=True)
    subset = adata[train].copy()
    tl.select_anchor_genes(subset, "time", "event", n_genes=5)
    pd.testing.assert_frame_equal(result.var, subset.var)
    assert result.uns["gexbert_anchor"]["params"]["n_samples"] == 150
    # copy=True left the input alone
    assert "gexbert_anchor" not in adata.var


def test_genes_with_missing_values_are_not_ranked():
    adata = make_survival_adata()
    adata.X[0, 0] = np.nan
    tl.select_anchor_genes(adata, "time", "event", n_genes=3, key_added="anchors")
    assert np.isnan(adata.var["anchors_pvalue"].iloc[0])
    assert not adata.var["anchors"].iloc[0]
    with pytest.raises(ValueError, match="`n_genes=30` exceeds the 29 genes that can be ranked"):
        tl.select_anchor_genes(adata, "time", "event", n_genes=30)


def test_bad_survival_columns_leave_var_alone():
    adata = make_survival_adata()
    adata.obs["event"] = 0
    with pytest.raises(ValueError, match="has no event"):
        tl.select_anchor_genes(adata, "time", "event")
    assert list(adata.var.columns) == ["driver"]


def test_restored_anchors_sit_next_to_the_measured_panel():
    adata = make_survival_adata()
    GexBERT.setup_anndata(adata)
    model = GexBERT(adata, **TINY_MODEL)
    model.train(**TINY_TRAIN)
    panel = np.zeros(adata.n_vars, dtype=bool)
    panel[10:22] = True
    measured = adata.copy()
    measured.X[:, ~panel] = np.nan
    anchors = ["gene_0", "gene_1", "gene_2"]
    tl.impute(measured, model, genes=anchors)
    values = measured.layers["gexbert_imputed"]
    mask = measured.layers["gexbert_imputed_mask"].toarray()
    anchor_cols = adata.var_names.isin(anchors)
    # the mask marks exactly the restored anchors; the panel is kept, the rest stays missing
    np.testing.assert_array_equal(mask, np.broadcast_to(anchor_cols, mask.shape))
    np.testing.assert_array_equal(values[:, panel], measured.X[:, panel])
    assert np.isnan(values[:, ~panel & ~anchor_cols]).all()
    assert np.isfinite(values[:, anchor_cols]).all()
    # each gene is restored independently of the others asked: as in a full imputation
    full = model.get_imputed_expression(measured)
    np.testing.assert_allclose(values[:, anchor_cols], full.loc[:, anchors], rtol=1e-5)
    assert measured.uns["gexbert"]["outputs"]["gexbert_imputed"]["params"]["genes"] == anchors
