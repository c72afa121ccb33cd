"""tl.rank_genes_attention and tl.rank_genes_mean: rank_genes_groups layout that scanpy reads."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import scanpy as sc  # noqa: E402
import scipy.sparse as sp  # noqa: E402

import gexbert_sc  # noqa: E402


@pytest.fixture
def programme_adata(programme_model):
    return programme_model.adata.copy()


def test_attention_ranking_is_read_by_scanpy(programme_model, programme_adata, tmp_path):
    adata = programme_adata
    gexbert_sc.tl.rank_genes_attention(adata, programme_model, "programme")
    uns = adata.uns["rank_genes_attention"]
    assert uns["params"]["groupby"] == "programme" and uns["params"]["reference"] == "rest"
    table = sc.get.rank_genes_groups_df(adata, "p2", key="rank_genes_attention")
    scores = programme_model.get_attention_scores(adata, groupby="programme", versus_rest=True)
    expected = scores[scores["group"] == "p2"].sort_values("rank")
    assert list(table["names"]) == list(expected["gene"])
    np.testing.assert_allclose(table["scores"], expected["score"], rtol=1e-6)
    assert table["pvals"].isna().all()
    np.testing.assert_allclose(table["pct_nz_group"], expected["context_fraction"])
    ratio = np.log2(expected["group_score"] / expected["rest_score"])
    np.testing.assert_allclose(table["logfoldchanges"], ratio, rtol=1e-5)
    assert set(table["names"][:6]) == set(adata.var_names[adata.var["programme"] == "p2"])
    # scanpy's own plots of a ranking work on it, and it survives an h5ad round trip
    sc.pl.rank_genes_groups_dotplot(adata, key="rank_genes_attention", n_genes=2, show=False)
    sc.pl.rank_genes_groups_heatmap(adata, key="rank_genes_attention", n_genes=2, show=False)
    plt.close("all")
    adata.write_h5ad(tmp_path / "ranked.h5ad")
    back = ad.read_h5ad(tmp_path / "ranked.h5ad")
    pd.testing.assert_frame_equal(
        sc.get.rank_genes_groups_df(back, "p2", key="rank_genes_attention"), table
    )
    assert "rank_genes_attention" in adata.uns["gexbert"]["outputs"]


def test_copy_returns_a_new_object(programme_model, programme_adata):
    out = gexbert_sc.tl.rank_genes_attention(
        programme_adata, programme_model, "programme", copy=True, key_added="attn"
    )
    assert "attn" in out.uns and "attn" not in programme_adata.uns


@pytest.mark.parametrize("sparse", [False, True])
def test_mean_ranking_by_hand(sparse):
    values = np.array([[1.0, 0.0, 5.0], [3.0, 0.0, 1.0], [0.0, 4.0, 1.0], [0.0, 2.0, 1.0]])
    adata = ad.AnnData(
        sp.csr_matrix(values) if sparse else values,
        obs=pd.DataFrame({"g": ["a", "a", "b", "b"]}, index=list("wxyz")),
        var=pd.DataFrame(index=["u", "v", "w"]),
    )
    gexbert_sc.tl.rank_genes_mean(adata, "g")
    table = sc.get.rank_genes_groups_df(adata, None, key="rank_genes_mean")
    a = table[table["group"] == "a"]
    assert list(a["names"]) == ["w", "u", "v"]
    np.testing.assert_allclose(a["scores"], [3.0, 2.0, 0.0])
    np.testing.assert_allclose(a["pct_nz_group"], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(a["logfoldchanges"].iloc[0], np.log2(3.0))
    b = table[table["group"] == "b"]
    assert list(b["names"]) == ["v", "w", "u"]


def test_mean_ranking_leaves_missing_values_out():
    values = np.array([[np.nan, 1.0], [4.0, 1.0], [1.0, 2.0], [1.0, 2.0]])
    adata = ad.AnnData(values, obs=pd.DataFrame({"g": ["a", "a", "b", "b"]}, index=list("wxyz")))
    gexbert_sc.tl.rank_genes_mean(adata, "g")
    assert adata.uns["rank_genes_mean"]["scores"]["a"][0] == pytest.approx(4.0)


def test_bad_input_gives_clear_errors_and_leaves_adata_alone(programme_model, programme_adata):
    adata = programme_adata
    before = set(adata.uns)
    with pytest.raises(KeyError, match="`groupby='tissue'` is not a column"):
        gexbert_sc.tl.rank_genes_attention(adata, programme_model, "tissue")
    with pytest.raises(TypeError, match="`model` must be a gexbert_sc.GexBERT"):
        gexbert_sc.tl.rank_genes_attention(adata, "model", "programme")
    adata.obs["one"] = "x"
    with pytest.raises(ValueError, match="at least two groups"):
        gexbert_sc.tl.rank_genes_attention(adata, programme_model, "one")
    with pytest.raises(ValueError, match="needs at least two groups"):
        gexbert_sc.tl.rank_genes_mean(adata, "one")
    with pytest.raises(KeyError, match="`layer='counts'` is not in `adata.layers`"):
        gexbert_sc.tl.rank_genes_mean(adata, "programme", layer="counts")
    assert set(adata.uns) == before
