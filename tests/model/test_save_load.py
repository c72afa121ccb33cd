import numpy as np
import pytest
import torch

from gexbert_sc import GexBERT
from gexbert_sc.data import align_genes


def test_save_load_is_bit_identical(trained_model, tmp_path):
    trained_model.save(tmp_path / "model", save_anndata=True)
    adata = trained_model.adata
    loaded = GexBERT.load(tmp_path / "model", adata=adata.copy())
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), trained_model.get_latent_representation()
    )
    np.testing.assert_array_equal(
        loaded.get_imputed_expression(return_numpy=True),
        trained_model.get_imputed_expression(return_numpy=True),
    )
    assert torch.equal(loaded.module.bin_edges, trained_model.module.bin_edges)
    assert bool(loaded.module.input_is_counts)
    without_data = GexBERT.load(tmp_path / "model", adata=False)
    np.testing.assert_array_equal(
        without_data.get_latent_representation(adata.copy()),
        trained_model.get_latent_representation(),
    )
    with_saved_data = GexBERT.load(tmp_path / "model")
    assert with_saved_data.adata.shape == adata.shape


def test_load_refuses_reordered_or_different_genes(trained_model, tmp_path):
    trained_model.save(tmp_path / "model")
    adata = trained_model.adata.copy()
    with pytest.raises(ValueError, match="model's genes in another order.*align_genes"):
        GexBERT.load(tmp_path / "model", adata=adata[:, ::-1].copy())
    with pytest.raises(ValueError, match="shares 30 of the model's 40 genes"):
        GexBERT.load(tmp_path / "model", adata=adata[:, :30].copy())
    aligned = align_genes(adata[:, ::-1].copy(), trained_model)
    loaded = GexBERT.load(tmp_path / "model", adata=aligned)
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), trained_model.get_latent_representation()
    )


def test_getters_refuse_mismatched_genes(trained_model):
    adata = trained_model.adata.copy()
    with pytest.raises(ValueError, match="another order"):
        trained_model.get_latent_representation(adata[:, ::-1].copy())


def test_panel_with_missing_genes_embeds_after_alignment(trained_model):
    panel = trained_model.adata[:, :20].copy()
    aligned = align_genes(panel, trained_model)
    z = trained_model.get_latent_representation(aligned)
    assert z.shape == (120, 16) and np.isfinite(z).all()
