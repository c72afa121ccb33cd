"""The bf16 code paths run on every machine (tiny models: bf16 is emulated without AVX512-BF16)."""

import numpy as np
import pytest
from helpers import TINY_MODEL, make_counts_adata

from gexbert_sc import GexBERT, tl


@pytest.fixture(scope="module")
def bf16_trained():
    adata = make_counts_adata(seed=8)
    GexBERT.setup_anndata(adata)
    model = GexBERT(adata, **TINY_MODEL, seed=2)
    model.train(max_epochs=2, batch_size=32, enable_progress_bar=False, precision="bf16-mixed")
    return model


def test_bf16_training_learns(bf16_trained):
    loss = bf16_trained.history["train_loss"].iloc[:, 0].astype(float)
    assert np.isfinite(loss).all()
    assert loss.iloc[-1] < loss.iloc[0]


def test_inference_after_bf16_training_is_fp32_and_independent_of_batch_size(bf16_trained):
    z_small = bf16_trained.get_latent_representation(batch_size=7)
    z_large = bf16_trained.get_latent_representation(batch_size=120)
    np.testing.assert_allclose(z_small, z_large, rtol=0, atol=1e-5)
    imputed_small = bf16_trained.get_imputed_expression(batch_size=5, return_numpy=True)
    imputed_large = bf16_trained.get_imputed_expression(batch_size=120, return_numpy=True)
    np.testing.assert_allclose(imputed_small, imputed_large, rtol=1e-5, atol=1e-5)


def test_reduced_precision_inference_is_asked_for_and_close(bf16_trained):
    exact = bf16_trained.get_latent_representation()
    fast = bf16_trained.get_latent_representation(precision="bf16-mixed")
    assert not np.array_equal(fast, exact)  # bf16 really ran
    # the tolerance stated in docs/performance.md: 1 % of the largest value
    assert np.abs(fast - exact).max() < 0.01 * np.abs(exact).max()
    adata = bf16_trained.adata.copy()
    tl.embed(adata, bf16_trained, precision="bf16-mixed")
    np.testing.assert_array_equal(adata.obsm["X_gexbert"], fast)
    assert adata.uns["gexbert"]["outputs"]["X_gexbert"]["params"]["precision"] == "bf16-mixed"
    with pytest.raises(ValueError, match="`precision` must be one of"):
        bf16_trained.get_latent_representation(precision="bf16")
