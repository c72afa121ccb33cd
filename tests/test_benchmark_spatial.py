"""The spatial benchmark (``benchmarks/spatial.py``): Li's protocol on a tiny synthetic pair."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from helpers import TINY_MODEL, benchmark_script

import gexbert_sc


@pytest.fixture(scope="module")
def spatial():
    with benchmark_script("spatial") as module:
        yield module


def _pair(seed: int = 0) -> tuple[ad.AnnData, ad.AnnData]:
    """A log-scale reference of 3 cell types and a spatial panel measured on another scale.

    The spatial cells are drawn from the same types; FISH-like values are a monotone
    transform of log expression, so only their order carries over.
    """
    rng = np.random.default_rng(seed)
    n_genes, n_types = 30, 3
    centres = rng.gamma(2.0, 1.0, size=(n_types, n_genes))

    def cells(n: int) -> np.ndarray:
        kind = rng.integers(n_types, size=n)
        return np.log1p(rng.poisson(np.exp(centres[kind])).astype(float))

    names = [f"g{j}" for j in range(n_genes)]
    reference = ad.AnnData(cells(240).astype(np.float32), var=pd.DataFrame(index=names))
    measured = cells(150)[:, :12]
    spatial = ad.AnnData(
        (20.0 + 5.0 * np.sqrt(measured)).astype(np.float32), var=pd.DataFrame(index=names[:12])
    )
    spatial.obsm["spatial"] = rng.normal(size=(150, 2))
    return reference, spatial


def test_folds_cover_every_gene_once_and_repeat(spatial):
    genes = [f"g{j}" for j in range(23)]
    folds = spatial.gene_folds(genes, n_folds=5)
    held_out = [g for _, test in folds for g in test]
    assert sorted(held_out) == sorted(genes)
    for train, test in folds:
        assert not set(train) & set(test) and len(train) + len(test) == 23
    assert folds == spatial.gene_folds(genes, n_folds=5)


def test_one_fold_scores_every_method_on_the_held_out_genes(spatial):
    reference, fish = _pair()
    gexbert_sc.GexBERT.setup_anndata(reference)
    model = gexbert_sc.GexBERT(reference, seed=0, **{**TINY_MODEL, "n_context": 16})
    model.train(max_epochs=2, batch_size=32, enable_progress_bar=False)
    methods = {"GexBERT": spatial.gexbert_predictor(model), "kNN": spatial.knn_predictor}
    train_genes, test_genes = spatial.gene_folds(list(fish.var_names), n_folds=4)[0]
    rows = spatial.run_fold(methods, reference, fish, train_genes, test_genes, fold=0)
    table = pd.DataFrame(rows)
    assert len(table) == 2 * len(test_genes)
    assert set(table["gene"]) == set(test_genes)
    assert np.isfinite(table[["PCC", "SSIM", "RMSE", "JS", "fold_seconds"]]).all().all()
    # the panel's genes carry the cell type, so the held-out genes are predictable
    assert table[table["method"] == "kNN"]["PCC"].median() > 0.5
    summary = spatial.summarise(table)
    assert set(summary["method"]) == {"GexBERT", "kNN"}
    # two methods: the mean ranks of each metric sum to 3, halved by the number of methods
    assert summary["AS"].sum() == pytest.approx(1.5)
    assert (summary["genes"] == len(test_genes)).all()


def test_knn_reads_the_panel_on_the_reference_scale(spatial):
    reference, fish = _pair()
    train, test = spatial.gene_folds(list(fish.var_names), n_folds=4)[0]
    matched = spatial.knn_predictor(reference, fish[:, train], train, test)
    # unmatched, the FISH values (all above the reference's) find the same few cells
    unmatched = spatial.reference_knn(
        np.asarray(reference[:, train].X),
        np.asarray(fish[:, train].X),
        np.asarray(reference[:, test].X),
    )
    truth = np.asarray(fish[:, test].X)
    r_matched = gexbert_sc.metrics.spatial_gene_scores(truth, matched)["PCC"].median()
    r_unmatched = gexbert_sc.metrics.spatial_gene_scores(truth, unmatched)["PCC"].median()
    assert r_matched > r_unmatched + 0.1
