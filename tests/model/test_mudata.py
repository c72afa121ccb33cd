import mudata
import numpy as np
import pytest
from helpers import TINY_MODEL, TINY_TRAIN, make_counts_adata

import gexbert_sc
from gexbert_sc import GexBERT


@pytest.fixture(scope="module")
def mdata_model():
    rna = make_counts_adata(n_obs=60, n_vars=30, seed=3)
    rna.obs["batch"] = np.repeat(["a", "b"], 30)
    rna.X = rna.X.astype(np.float32)
    rna.X[0, :5] = np.nan
    other = rna[:, :4].copy()
    other.var_names = [f"p{i}" for i in range(4)]
    mdata = mudata.MuData({"rna": rna, "prot": other})
    mdata.obs["batch"] = np.repeat(["a", "b"], 30)
    GexBERT.setup_mudata(mdata, batch_key="batch", modalities={"rna_layer": "rna"})
    model = GexBERT(mdata, **TINY_MODEL)
    model.train(**TINY_TRAIN)
    return mdata, model


def test_mudata_model_equals_the_anndata_model_of_the_same_data(mdata_model):
    mdata, model = mdata_model
    rna = mdata.mod["rna"].copy()
    GexBERT.setup_anndata(rna, batch_key="batch")
    reference = GexBERT(rna, **TINY_MODEL)
    reference.train(**TINY_TRAIN)
    np.testing.assert_allclose(
        model.get_latent_representation(), reference.get_latent_representation(), atol=1e-5
    )


def test_writers_put_outputs_where_muon_users_look(mdata_model):
    mdata, model = mdata_model
    gexbert_sc.tl.embed(mdata, model)
    gexbert_sc.tl.impute(mdata, model)
    assert mdata.obsm["X_gexbert"].shape == (mdata.n_obs, TINY_MODEL["d_model"])
    imputed = mdata.mod["rna"].layers["gexbert_imputed"]
    assert imputed.shape == mdata.mod["rna"].shape
    assert not np.isnan(imputed).any()
    assert mdata.mod["rna"].layers["gexbert_imputed_mask"][0, :5].toarray().all()


def test_mudata_save_load_round_trip(mdata_model, tmp_path):
    mdata, model = mdata_model
    model.save(tmp_path / "m", save_anndata=True)
    loaded = GexBERT.load(tmp_path / "m")
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )


def test_setup_mudata_refuses_missing_modality_argument():
    rna = make_counts_adata(n_obs=10, n_vars=5, seed=0)
    mdata = mudata.MuData({"rna": rna})
    with pytest.raises(ValueError, match="modalities"):
        GexBERT.setup_mudata(mdata)
    with pytest.raises(KeyError, match="'gex'"):
        GexBERT.setup_mudata(mdata, modalities={"rna_layer": "gex"})
    with pytest.raises(KeyError, match="batch_key='nope'"):
        GexBERT.setup_mudata(mdata, batch_key="nope", modalities={"rna_layer": "rna"})
