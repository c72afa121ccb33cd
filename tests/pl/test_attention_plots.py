"""pl plots of the interpretability issue: each renders with Agg, returns its Axes, and says
which function to run first when its input is missing."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from scipy.stats import pearsonr  # noqa: E402

import gexbert_sc  # noqa: E402
from gexbert_sc import pl  # noqa: E402


@pytest.fixture
def ranked(programme_model):
    adata = programme_model.adata.copy()
    gexbert_sc.tl.rank_genes_attention(adata, programme_model, "programme")
    gexbert_sc.tl.gene_embedding(adata, programme_model)
    return adata


def test_rank_genes_attention_plot(ranked, tmp_path):
    path = tmp_path / "rank.png"
    ax = pl.rank_genes_attention(ranked, n_genes=3, save=path)
    assert isinstance(ax, Axes) and path.stat().st_size > 0
    assert [t.get_text() for t in ax.get_yticklabels()] == ["p0", "p1", "p2"]
    assert len(ax.get_xticklabels()) == 9
    _, own = plt.subplots()
    assert pl.rank_genes_attention(ranked, groups=["p1"], ax=own, show=False) is own
    plt.close("all")


def test_restoration_scatter_reports_pearson_r_of_the_hidden_entries(trained_model, tmp_path):
    truth = trained_model.adata.copy()
    values = np.nan_to_num(truth.X, nan=1.0)
    truth.X = values
    hidden, mask = gexbert_sc.metrics.mask_entries(values, 0.2, seed=0)
    query = truth.copy()
    query.X = hidden
    gexbert_sc.tl.impute(query, trained_model)
    path = tmp_path / "scatter.png"
    ax = pl.restoration_scatter(query, truth, log1p=True, save=path)
    imputed = query.layers["gexbert_imputed"]
    r = pearsonr(np.log1p(values[mask]), np.log1p(imputed[mask])).statistic
    assert ax.get_title() == f"{int(mask.sum())} hidden entries: Pearson r = {r:.3f}"
    assert path.stat().st_size > 0
    # the truth as an array or a layer, and a mask of one's own, give the same figure
    query.layers["truth"] = values
    for source in (values, "truth"):
        again = pl.restoration_scatter(query, source, mask=mask, log1p=True, show=False)
        assert again.get_title() == ax.get_title()
    plt.close("all")
    with pytest.raises(KeyError, match="run `gexbert_sc.tl.impute` first"):
        pl.restoration_scatter(truth, values, show=False)
    with pytest.raises(ValueError, match=r"`truth` has shape \(3, 3\)"):
        pl.restoration_scatter(query, np.zeros((3, 3)), show=False)


def test_loss_curves(trained_model, tmp_path):
    ax = pl.loss_curves(trained_model, save=tmp_path / "loss.png")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["train_loss", "validation_loss"]
    assert len(ax.get_lines()[0].get_xdata()) == 2
    with pytest.raises(KeyError, match="has none of"):
        pl.loss_curves(trained_model, keys=["accuracy"], show=False)
    untrained = gexbert_sc.GexBERT(trained_model.adata, d_model=16, n_heads=2)
    with pytest.raises(RuntimeError, match="run `model.train\\(\\)` first"):
        pl.loss_curves(untrained, show=False)
    plt.close("all")


def test_gene_embedding_umap(ranked, tmp_path):
    ax = pl.gene_embedding_umap(
        ranked, color="programme", label_genes=["gene_0"], n_neighbors=5, save=tmp_path / "u.png"
    )
    assert isinstance(ax, Axes) and ax.get_title() == "30 genes (gexbert_gene_embedding)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["none", "p0", "p1", "p2"]
    assert [t.get_text() for t in ax.texts] == ["gene_0"]
    plt.close("all")
    bare = ranked.copy()
    del bare.varm["gexbert_gene_embedding"]
    with pytest.raises(KeyError, match="run `gexbert_sc.tl.gene_embedding` first"):
        pl.gene_embedding_umap(bare, show=False)
    with pytest.raises(KeyError, match="`color='tissue'` is not a column of `adata.var`"):
        pl.gene_embedding_umap(ranked, color="tissue", show=False)


def test_missing_ranking_says_what_to_run(programme_model):
    with pytest.raises(KeyError, match="run `gexbert_sc.tl.rank_genes_attention` first"):
        pl.rank_genes_attention(programme_model.adata.copy(), show=False)
