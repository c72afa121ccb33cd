"""metrics.ranking_overlap and metrics.attention_ablation: the checks of attention rankings."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import gexbert_sc
from gexbert_sc.metrics import attention_ablation, ranking_overlap


def _ranked(values: np.ndarray, key: str, adata: ad.AnnData | None = None) -> ad.AnnData:
    """An AnnData with a mean-expression ranking of two groups under ``key``."""
    if adata is None:
        adata = ad.AnnData(
            np.zeros((4, values.shape[1])),
            obs=pd.DataFrame({"g": ["a", "a", "b", "b"]}, index=list("wxyz")),
        )
    ranked = adata.copy()
    ranked.X = values
    gexbert_sc.tl.rank_genes_mean(ranked, "g", key_added=key)
    adata.uns[key] = ranked.uns[key]
    return adata


def test_overlap_of_top_lists_by_hand():
    # group a ranks genes 0 > 1 > 2 > 3 in the first ranking, 3 > 1 > 0 > 2 in the second
    first = np.array([[4.0, 3, 2, 1], [4, 3, 2, 1], [1, 2, 3, 4], [1, 2, 3, 4]])
    second = np.array([[2.0, 3, 1, 4], [2, 3, 1, 4], [1, 2, 3, 4], [1, 2, 3, 4]])
    adata = _ranked(second, "second", _ranked(first, "first"))
    table = ranking_overlap(adata, "first", "second", n_genes=2)
    assert list(table["group"]) == ["a", "b"]
    assert list(table["overlap"]) == [1, 2]
    np.testing.assert_allclose(table["fraction"], [0.5, 1.0])
    np.testing.assert_allclose(table["chance"], 0.5)


def test_overlap_errors():
    adata = _ranked(np.eye(4), "first")
    with pytest.raises(KeyError, match=r"`adata.uns\['wilcoxon'\]` not found; run"):
        ranking_overlap(adata, "first", "wilcoxon")
    with pytest.raises(ValueError, match="`n_genes=5` exceeds the 4 genes"):
        ranking_overlap(adata, "first", "first", n_genes=5)


def test_ablation_scores_every_group_reproducibly(programme_model):
    # whether the top genes hurt more is a finding (docs/interpretability.md), not a given
    adata = programme_model.adata.copy()
    gexbert_sc.tl.rank_genes_attention(adata, programme_model, "programme")
    table = attention_ablation(
        programme_model, adata, "programme", n_genes=4, n_random=3, eval_fraction=0.3
    )
    assert list(table["group"]) == ["p0", "p1", "p2"]
    assert (table["n_samples"] == 30).all()
    rmse = table[["rmse_intact", "rmse_top", "rmse_random"]].to_numpy()
    assert np.isfinite(rmse).all() and (rmse > 0).all()
    assert (table["top_hurts_more"] == (table["rmse_top"] > table["rmse_random"])).all()
    again = attention_ablation(
        programme_model, adata, "programme", n_genes=4, n_random=3, eval_fraction=0.3
    )
    pd.testing.assert_frame_equal(table, again)
    only = attention_ablation(
        programme_model, adata, "programme", groups=["p2"], n_genes=4, n_random=3
    )
    assert list(only["group"]) == ["p2"]


def test_ablation_errors(programme_model):
    adata = programme_model.adata.copy()
    with pytest.raises(KeyError, match="run `gexbert_sc.tl.rank_genes_attention`"):
        attention_ablation(programme_model, adata, "programme")
    gexbert_sc.tl.rank_genes_attention(adata, programme_model, "programme")
    with pytest.raises(ValueError, match="too few for"):
        attention_ablation(programme_model, adata, "programme", n_genes=17)
    with pytest.raises(ValueError, match="`eval_fraction`"):
        attention_ablation(programme_model, adata, "programme", eval_fraction=0.0)
    with pytest.raises(KeyError, match=r"`groups` \['p9'\] are not ranked"):
        attention_ablation(programme_model, adata, "programme", groups=["p9"])
