"""Restorations stay in the range the training data support (the rule in docs/design.md)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import TINY_MODEL, TINY_TRAIN, make_counts_adata

from gexbert_sc import GexBERT
from gexbert_sc.data import default_validation_indices


@pytest.fixture(scope="module")
def rare_gene_model():
    """Counts in which genes 0-4 are almost never expressed (library share about 5e-5)."""
    adata = make_counts_adata(n_obs=200, n_vars=40, seed=0)
    adata.X[:, :5] = (np.random.default_rng(1).random((200, 5)) < 0.02).astype(np.float32)
    GexBERT.setup_anndata(adata)
    model = GexBERT(adata, **TINY_MODEL)
    model.train(**{**TINY_TRAIN, "max_epochs": 5})
    return adata, model


def count_ceiling(counts: np.ndarray) -> np.ndarray:
    """Each gene's largest CP10k value times the largest library: the documented bound."""
    library = counts.sum(axis=1, keepdims=True)
    return (counts / library).max(axis=0) * library.max()


def test_a_query_observing_only_rare_genes_restores_no_more_than_training_supports(
    rare_gene_model,
):
    """A few counts in near-zero-share genes imply a huge library (1e5 for 1e2-1e3 in
    training); unbounded, the other genes were restored at up to 1,745 counts where no
    training cell held more than 38."""
    adata, model = rare_gene_model
    query = adata[:4].copy()
    query.X[:, 5:] = np.nan
    query.X[:, :5] = np.array(
        [[1, 0, 0, 0, 0], [2, 1, 0, 0, 0], [0, 0, 0, 0, 0], [5, 3, 1, 0, 2]], dtype=np.float32
    )
    restored = model.get_imputed_expression(query, return_numpy=True)
    ceiling = count_ceiling(adata.X)
    assert np.isfinite(restored).all()
    assert (restored[:, 5:] <= ceiling[5:] * (1 + 1e-5)).all()  # 0-4: observed, kept
    assert restored[:, 5:].max() <= 2 * adata.X.max()


def test_log_scale_restorations_stay_in_each_genes_training_range():
    adata = make_counts_adata(n_obs=120, n_vars=30, seed=2)
    adata.X = np.log1p(adata.X) - 1.0  # log scale, with negative values
    GexBERT.setup_anndata(adata)
    model = GexBERT(adata, **TINY_MODEL)
    model.train(**TINY_TRAIN)
    query = adata[:20].copy()
    query.X[:, 3:] = np.nan
    query.X[:, :3] = 40.5  # far above anything seen: restorations must not follow
    restored = model.get_imputed_expression(query, keep_observed=False, return_numpy=True)
    low, high = adata.X.min(axis=0), adata.X.max(axis=0)
    assert (restored >= low - 1e-6).all() and (restored <= high + 1e-6).all()


def test_the_bounds_are_fitted_statistics_saved_with_the_model(rare_gene_model, tmp_path):
    adata, model = rare_gene_model
    # fitted on the samples outside the default validation set
    fitted = np.delete(adata.X, default_validation_indices(adata.n_obs), axis=0)
    library = fitted.sum(axis=1, keepdims=True)
    expected = np.log1p(fitted / library * 1e4)
    np.testing.assert_allclose(model.module.gene_max.numpy(), expected.max(axis=0), rtol=1e-5)
    np.testing.assert_allclose(model.module.gene_min.numpy(), expected.min(axis=0), atol=1e-6)
    assert float(model.module.max_size_factor) == pytest.approx(library.max(), rel=1e-5)
    model.save(tmp_path / "m")
    loaded = GexBERT.load(tmp_path / "m", adata)
    np.testing.assert_array_equal(loaded.module.gene_max.numpy(), model.module.gene_max.numpy())


def test_models_saved_before_the_bounds_load_and_restore_unbounded(rare_gene_model, tmp_path):
    import json
    from pathlib import Path

    from gexbert_sc.utils import MANIFEST_NAME

    legacy = GexBERT.load(
        Path(__file__).parents[1] / "fixtures" / "saved_models" / "gexbert_0.1.0", adata=False
    )
    assert np.isinf(legacy.module.gene_max.numpy()).all()
    assert np.isinf(float(legacy.module.max_size_factor))
    # a manifest written before the bounds existed does not list them: still loads
    adata, model = rare_gene_model
    model.save(tmp_path / "m")
    path = tmp_path / "m" / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    for name in ("gene_min", "gene_max", "max_size_factor"):
        del manifest["statistics"][name]
    path.write_text(json.dumps(manifest))
    GexBERT.load(tmp_path / "m", adata)
