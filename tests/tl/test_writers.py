import inspect

import numpy as np
import pytest
import scanpy as sc
from anndata.tests.helpers import assert_equal
from helpers import TINY_MODEL, make_counts_adata

import gexbert_sc
from gexbert_sc import GexBERT, tl


def _fresh_copy(model):
    return model.adata.copy()


def test_embed_writes_obsm_and_provenance(trained_model):
    adata = _fresh_copy(trained_model)
    assert tl.embed(adata, trained_model) is None
    np.testing.assert_array_equal(
        adata.obsm["X_gexbert"], trained_model.get_latent_representation()
    )
    record = adata.uns["gexbert"]["outputs"]["X_gexbert"]
    assert record["params"] == {"batch_size": None, "memory_budget": None, "precision": "32-true"}
    assert record["model"] == "GexBERT"
    assert record["model_params"]["d_model"] == TINY_MODEL["d_model"]
    assert "input=counts" in record["summary"]
    sc.pp.neighbors(adata, use_rep="X_gexbert", n_neighbors=5)
    assert "connectivities" in adata.obsp


def test_embed_copy_leaves_input_unchanged(trained_model):
    adata = _fresh_copy(trained_model)
    before = adata.copy()
    result = tl.embed(adata, trained_model, key_added="X_custom", copy=True)
    assert "X_custom" in result.obsm and "X_custom" not in adata.obsm
    assert "outputs" in result.uns["gexbert"]
    assert_equal(adata, before)


def test_impute_fills_exactly_the_missing_entries(trained_model):
    adata = _fresh_copy(trained_model)
    missing = np.isnan(adata.X)
    assert missing.any()
    tl.impute(adata, trained_model)
    imputed = adata.layers["gexbert_imputed"]
    assert np.isfinite(imputed).all()
    np.testing.assert_array_equal(imputed[~missing], adata.X[~missing])
    np.testing.assert_array_equal(adata.layers["gexbert_imputed_mask"].toarray(), missing)
    assert (
        adata.uns["gexbert"]["outputs"]["gexbert_imputed"]["params"]["n_imputed"] == missing.sum()
    )


def test_impute_all_entries(trained_model):
    adata = _fresh_copy(trained_model)
    tl.impute(adata, trained_model, keep_observed=False, key_added="restored")
    observed = ~np.isnan(adata.X)
    assert not np.allclose(adata.layers["restored"][observed], adata.X[observed])


def test_overwriting_warns(trained_model):
    adata = _fresh_copy(trained_model)
    tl.embed(adata, trained_model)
    with pytest.warns(UserWarning, match=r"Overwriting existing `obsm\['X_gexbert'\]`"):
        tl.embed(adata, trained_model)


@pytest.mark.parametrize("writer", [tl.embed, tl.impute])
def test_refused_call_leaves_adata_unchanged(writer):
    adata = make_counts_adata()
    GexBERT.setup_anndata(adata)
    untrained = GexBERT(adata, **TINY_MODEL)
    before = adata.copy()
    with pytest.raises(RuntimeError, match="not trained yet"):
        writer(adata, untrained)
    with pytest.raises(TypeError, match="`model` must be a gexbert_sc.GexBERT"):
        writer(adata, "model")
    assert set(adata.obsm) == set(before.obsm) and set(adata.layers) == set(before.layers)
    assert set(adata.uns) == set(before.uns)


# tl functions that read a model and return a table instead of writing into AnnData
READERS = {"gene_similarity"}


@pytest.mark.parametrize("name", sorted(set(gexbert_sc.tl.__all__) - READERS))
def test_writer_signatures_follow_scanpy(name):
    """adata first, ≤ 3 positional, keyword-only `copy=False`, returns AnnData | MuData | None."""
    signature = inspect.signature(getattr(gexbert_sc.tl, name))
    params = list(signature.parameters.values())
    assert params[0].name == "adata"
    positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert len(positional) <= 3
    assert signature.parameters["copy"].kind is inspect.Parameter.KEYWORD_ONLY
    assert signature.parameters["copy"].default is False
    assert signature.return_annotation in ("AnnData | None", "AnnData | MuData | None")


def _assert_unchanged(adata, before):
    assert list(adata.obs.columns) == list(before.obs.columns)
    assert set(adata.uns) == set(before.uns)
    assert set(adata.obsm) == set(before.obsm) and set(adata.layers) == set(before.layers)
    np.testing.assert_array_equal(adata.X, before.X)


@pytest.mark.parametrize("writer", [tl.embed, tl.impute])
def test_copy_never_touches_the_callers_adata(trained_model, writer):
    # new data that was never set up: the model reads it through a view (reading_view), so
    # scvi-tools' registration columns reach neither the caller's object nor the copy
    adata = make_counts_adata(seed=9)
    before = adata.copy()
    result = writer(adata, trained_model, copy=True)
    _assert_unchanged(adata, before)
    assert "_scvi_batch" not in result.obs and "_scvi_uuid" not in result.uns


def test_each_output_names_its_own_model(trained_model):
    adata = make_counts_adata(seed=1)
    GexBERT.setup_anndata(adata)
    other = GexBERT(adata, **{**TINY_MODEL, "d_model": 8, "n_heads": 2}, seed=3)
    other.train(max_epochs=1, batch_size=32, enable_progress_bar=False)
    tl.embed(adata, trained_model)
    tl.impute(adata, other, key_added="from_other")
    outputs = adata.uns["gexbert"]["outputs"]
    assert outputs["X_gexbert"]["model_params"]["d_model"] == TINY_MODEL["d_model"]
    assert outputs["from_other"]["model_params"]["d_model"] == 8
    assert outputs["from_other"]["model_params"]["seed"] == 3
    assert "d_model=8" in outputs["from_other"]["summary"]
