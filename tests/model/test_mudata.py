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


def test_a_mudata_model_reads_an_anndata_query_of_the_same_genes(mdata_model):
    mdata, model = mdata_model
    query = mdata.mod["rna"].copy()
    query.obs["batch"] = mdata.obs["batch"].to_numpy()
    before = query.copy()
    np.testing.assert_allclose(
        model.get_latent_representation(query), model.get_latent_representation(), atol=1e-5
    )
    np.testing.assert_allclose(
        model.get_imputed_expression(query), model.get_imputed_expression(), atol=1e-4, rtol=1e-5
    )
    assert list(query.obs) == list(before.obs)  # nothing registered in the user's object


def test_an_anndata_model_reads_a_mudata_query_through_its_expression_modality():
    rna = make_counts_adata(n_obs=40, n_vars=20, seed=4)
    GexBERT.setup_anndata(rna, batch_key="batch")
    model = GexBERT(rna, **TINY_MODEL)
    model.train(**TINY_TRAIN)
    query_rna = rna.copy()
    for key in [k for k in query_rna.obs if k.startswith("_scvi")]:
        del query_rna.obs[key]
    other = query_rna[:, :3].copy()
    other.var_names = ["p0", "p1", "p2"]
    query = mudata.MuData({"rna": query_rna, "prot": other})
    np.testing.assert_allclose(
        model.get_latent_representation(query), model.get_latent_representation(), atol=1e-5
    )
    # no modality with the model's genes: refused with the modalities named
    with pytest.raises(ValueError, match=r"no modality.*\['prot'\]"):
        model.get_latent_representation(mudata.MuData({"prot": other}))


def test_a_mudata_model_on_a_layer_reads_that_layer_of_an_anndata_query():
    rna = make_counts_adata(n_obs=40, n_vars=20, seed=5)
    rna.layers["counts"] = rna.X.copy()
    rna.X = np.log1p(rna.X)
    mdata = mudata.MuData({"rna": rna})
    GexBERT.setup_mudata(mdata, rna_layer="counts", modalities={"rna_layer": "rna"})
    model = GexBERT(mdata, **TINY_MODEL)
    model.train(**TINY_TRAIN)
    np.testing.assert_allclose(
        model.get_latent_representation(rna.copy()), model.get_latent_representation(), atol=1e-5
    )
