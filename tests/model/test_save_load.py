from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_MODEL, make_counts_adata

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


FIXTURES = Path(__file__).parents[1] / "fixtures" / "saved_models"


def test_model_saved_by_version_0_1_0_loads_with_the_same_outputs():
    # saved by gexbert_sc 0.1.0 (commit 14092bf, before the model family refactor) from
    # make_counts_adata(seed=21) with 10 % NaN, TINY_MODEL, seed=3, fp32 training
    adata = make_counts_adata(seed=21)
    adata.X[np.random.default_rng(21).random(adata.shape) < 0.1] = np.nan
    loaded = GexBERT.load(FIXTURES / "gexbert_0.1.0", adata=adata)
    expected = np.load(FIXTURES / "gexbert_0.1.0_embedding.npy")
    np.testing.assert_allclose(loaded.get_latent_representation(), expected, rtol=0, atol=1e-5)
    assert loaded.hparams["d_model"] == TINY_MODEL["d_model"]
    assert "input=counts" in loaded._model_summary_string


def test_weights_of_another_architecture_are_refused_with_a_reason(trained_model, tmp_path):
    trained_model.save(tmp_path / "model")
    path = tmp_path / "model" / "model.pt"
    saved = torch.load(path, weights_only=False)
    del saved["model_state_dict"]["profile_proj"]  # as saved before the profile projection
    torch.save(saved, path)
    (tmp_path / "model" / "gexbert_manifest.json").unlink()  # versions before 0.2 wrote none
    with pytest.raises(ValueError, match="do not fit this version's GexBERT.*another gexbert_sc"):
        GexBERT.load(tmp_path / "model", adata=trained_model.adata.copy())


def test_model_from_a_pretrained_one_on_a_panel_keeps_its_weights(trained_model):
    # a panel measured half the genes: fitting statistics on it would fail (genes never
    # observed), so the new model takes the pretrained model's registry and weights
    panel = align_genes(trained_model.adata[:, :20].copy(), trained_model)
    GexBERT.setup_anndata(panel)
    with pytest.raises(ValueError, match="20 of 40 genes have no observed value"):
        GexBERT(panel, **TINY_MODEL)
    derived = GexBERT._from_pretrained(trained_model, panel)
    assert not derived.is_trained
    for name, tensor in trained_model.module.state_dict().items():
        assert torch.equal(derived.module.state_dict()[name], tensor), name
    derived.is_trained_ = True  # only to read it out: nothing was trained on top
    np.testing.assert_array_equal(
        derived.get_latent_representation(), trained_model.get_latent_representation(panel)
    )
