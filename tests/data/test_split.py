"""The default validation samples: held out of the statistics and validated on by train()."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import TINY_MODEL, TINY_TRAIN, make_counts_adata

from gexbert_sc import GexBERT
from gexbert_sc.data import default_validation_indices, fit_expression_statistics


@pytest.mark.parametrize("n_obs", [9, 10, 120, 1001])
def test_default_validation_indices_are_scvi_tools_share_fixed_and_sorted(n_obs):
    validation = default_validation_indices(n_obs)
    assert len(validation) == n_obs - math.ceil(0.9 * n_obs)  # 0 below 10 samples
    assert (np.diff(validation) > 0).all() and ((0 <= validation) & (validation < n_obs)).all()
    np.testing.assert_array_equal(validation, default_validation_indices(n_obs))


def test_statistics_exclude_rows():
    values = np.random.default_rng(0).random((50, 4)).astype(np.float32)
    values[7, 0] = 100.0
    names = np.arange(4)
    everything = fit_expression_statistics(values, None, False, 6, names, n_axes=2)
    without = fit_expression_statistics(values, None, False, 6, names, n_axes=2, exclude_rows=[7])
    assert everything.gene_max[0] == 100.0
    assert without.gene_max[0] < 1.0
    np.testing.assert_allclose(without.gene_mean, np.delete(values, 7, axis=0).mean(axis=0))


def test_model_holds_the_default_validation_samples_out_of_statistics_and_training():
    adata = make_counts_adata(seed=2)
    validation = default_validation_indices(adata.n_obs)
    adata.X[validation, 0] = 5_000  # gene_0 far higher in the validation samples only
    GexBERT.setup_anndata(adata)
    model = GexBERT(adata, **TINY_MODEL)
    trained_max = np.log1p(
        np.delete(adata.X, validation, axis=0)[:, 0]
        / np.delete(adata.X, validation, axis=0).sum(1)
        * 1e4
    ).max()
    assert model.module.gene_max[0].item() < trained_max + 1.0  # never the validation values
    model.train(**TINY_TRAIN)
    np.testing.assert_array_equal(np.sort(model.validation_indices), validation)
    assert len(np.intersect1d(model.train_indices, validation)) == 0
    # another seed: the same validation samples; a split asked for: scvi-tools' random one
    other = GexBERT(adata, **TINY_MODEL, seed=5)
    other.train(**TINY_TRAIN)
    np.testing.assert_array_equal(np.sort(other.validation_indices), validation)
    asked = GexBERT(adata, **TINY_MODEL)
    asked.train(**TINY_TRAIN, train_size=0.8)
    assert len(asked.validation_indices) == 24


def test_a_gene_observed_only_in_validation_samples_falls_back_to_every_sample():
    adata = make_counts_adata(seed=4)
    validation = default_validation_indices(adata.n_obs)
    adata.X[:, 0] = np.nan
    adata.X[validation, 0] = 7.0  # gene_0 measured in the validation samples only
    GexBERT.setup_anndata(adata)
    model = GexBERT(adata, **TINY_MODEL)  # would refuse gene_0 as never observed otherwise
    assert np.isfinite(model.module.gene_max[0].item())
    assert model.module.gene_max[0].item() > 0


def test_other_data_splitter_arguments_keep_the_default_validation_samples():
    adata = make_counts_adata(seed=6)
    GexBERT.setup_anndata(adata)
    model = GexBERT(adata, **TINY_MODEL)
    model.train(**TINY_TRAIN, datasplitter_kwargs={"drop_last": False})
    validation = default_validation_indices(adata.n_obs)
    np.testing.assert_array_equal(np.sort(model.validation_indices), validation)
