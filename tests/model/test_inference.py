import numpy as np
import pytest
import scipy.sparse as sp
from helpers import TINY_MODEL, TINY_TRAIN, assert_fp32_path_close, make_counts_adata

from gexbert_sc import GexBERT


def test_history_has_real_masked_validation_loss(trained_model):
    history = trained_model.history
    for key in ("train_loss", "validation_loss", "masked_mse_validation", "bottleneck_mse_train"):
        assert key in history
    assert history["validation_loss"].iloc[-1, 0] > 0


def test_outputs_do_not_depend_on_batch_size_chunking_or_order(trained_model):
    z_small = trained_model.get_latent_representation(batch_size=7)
    z_large = trained_model.get_latent_representation(batch_size=120)
    np.testing.assert_allclose(z_small, z_large, rtol=0, atol=1e-5)
    order = np.random.default_rng(0).permutation(120)
    z_perm = trained_model.get_latent_representation(indices=order, batch_size=16)
    np.testing.assert_allclose(z_perm, z_large[order], rtol=0, atol=1e-5)
    imp_a = trained_model.get_imputed_expression(
        batch_size=9, query_chunk_size=7, return_numpy=True
    )
    imp_b = trained_model.get_imputed_expression(
        batch_size=64, query_chunk_size=1000, return_numpy=True
    )
    np.testing.assert_allclose(imp_a, imp_b, rtol=1e-5, atol=1e-5)
    z_again = trained_model.get_latent_representation(batch_size=120)
    np.testing.assert_array_equal(z_again, z_large)


def test_minibatches_are_length_buckets(trained_model, monkeypatch):
    query = trained_model.adata[:16].copy()
    query.X[1::2, 10:] = np.nan  # odd samples: at most 10 observed genes, short contexts
    widths = []
    encode = trained_model.module.encode

    def recording_encode(gene_idx, values, valid, *args, **kwargs):
        widths.append(valid.shape[1])
        return encode(gene_idx, values, valid, *args, **kwargs)

    monkeypatch.setattr(trained_model.module, "encode", recording_encode)
    z = trained_model.get_latent_representation(query, batch_size=8)
    order = trained_model.inference_order(query)
    assert sorted(order[:8]) == list(range(1, 16, 2))
    # the short contexts are read together, not padded to the long ones of the even samples
    assert widths[0] <= 10 < widths[1]
    alone = np.vstack([trained_model.get_latent_representation(query, [i]) for i in range(16)])
    assert_fp32_path_close(z, alone)
    imputed = trained_model.impute_expression(query, batch_size=8).imputed.toarray()
    np.testing.assert_array_equal(imputed, np.isnan(query.X))


def test_imputation_keeps_observed_values_and_uses_input_scale(trained_model):
    adata = trained_model.adata
    x = adata.X
    kept = trained_model.get_imputed_expression()
    assert list(kept.columns) == list(adata.var_names)
    observed = ~np.isnan(x)
    np.testing.assert_array_equal(kept.values[observed], x[observed])
    assert np.isfinite(kept.values).all()
    restored = trained_model.get_imputed_expression(keep_observed=False, return_numpy=True)
    assert not np.allclose(restored[observed], x[observed])
    # keeping observed values decodes only the missing genes: the same restorations there
    assert_fp32_path_close(kept.values[~observed], restored[~observed])
    # counts in -> expected counts out: same order of magnitude as the library
    ratio = np.nansum(restored * observed, 1) / np.nansum(x, 1)
    assert 0.5 < np.median(ratio) < 2.0


def test_imputation_of_selected_genes(trained_model):
    subset = trained_model.get_imputed_expression(genes=["gene_5", "gene_1"], indices=[0, 3])
    full = trained_model.get_imputed_expression(return_numpy=True)
    assert list(subset.columns) == ["gene_5", "gene_1"]
    assert list(subset.index) == ["cell_0", "cell_3"]
    np.testing.assert_allclose(subset.values, full[[0, 3]][:, [5, 1]], atol=1e-5)
    with pytest.raises(KeyError, match="1 genes unknown to the model"):
        trained_model.get_imputed_expression(genes=["gene_1", "TP53"])
    with pytest.raises(ValueError, match="`query_chunk_size` must be a positive integer"):
        trained_model.get_imputed_expression(query_chunk_size=0)


def test_gene_embeddings(trained_model):
    emb = trained_model.get_gene_embeddings()
    assert emb.shape == (40, TINY_MODEL["d_model"])
    assert list(emb.index) == list(trained_model.adata.var_names)


def test_sparse_and_dense_inputs_give_equal_outputs():
    outputs = []
    for to_sparse in (False, True):
        adata = make_counts_adata(seed=3)
        if to_sparse:
            adata.X = sp.csr_matrix(adata.X)
        GexBERT.setup_anndata(adata)
        model = GexBERT(adata, **TINY_MODEL, seed=5)
        # fp32 training: under bf16 the statistics' last-bit differences would be amplified
        model.train(**TINY_TRAIN, precision="32-true")
        outputs.append(model.get_latent_representation())
    # identical up to float summation order in the fitted statistics
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-4, atol=1e-4)


def test_seed_makes_training_reproducible():
    embeddings = []
    for seed in (11, 11, 12):
        adata = make_counts_adata(seed=4)
        GexBERT.setup_anndata(adata)
        model = GexBERT(adata, **TINY_MODEL, seed=seed)
        model.train(**TINY_TRAIN)
        embeddings.append(model.get_latent_representation())
    np.testing.assert_array_equal(embeddings[0], embeddings[1])
    assert not np.allclose(embeddings[0], embeddings[2])


def test_missing_layer_equals_nan_input():
    adata = make_counts_adata(seed=6)
    mask = np.random.default_rng(0).random(adata.shape) < 0.2
    adata.layers["missing"] = mask
    nan_adata = adata.copy()
    nan_adata.X[mask] = np.nan
    results = []
    for data, kwargs in ((adata, {"missing_layer": "missing"}), (nan_adata, {})):
        GexBERT.setup_anndata(data, **kwargs)
        model = GexBERT(data, **TINY_MODEL)
        model.train(**TINY_TRAIN)
        results.append(model.get_latent_representation())
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)


def test_training_again_after_a_getter():
    adata = make_counts_adata()
    GexBERT.setup_anndata(adata)
    model = GexBERT(adata, **TINY_MODEL)
    model.train(**TINY_TRAIN)
    model.get_latent_representation()
    model.train(**TINY_TRAIN)
    assert model.history["train_loss"].iloc[-1, 0] > 0


def test_a_query_without_the_labels_column_is_read_and_left_unchanged():
    """A model set up with `labels_key` reads a query that has no labels (labels are unused)."""
    adata = make_counts_adata(seed=5)
    GexBERT.setup_anndata(adata, labels_key="cell_type", batch_key="batch")
    model = GexBERT(adata, **TINY_MODEL)
    model.train(**{**TINY_TRAIN, "max_epochs": 1})
    query = make_counts_adata(seed=5)
    del query.obs["cell_type"]
    before = query.copy()
    np.testing.assert_array_equal(
        model.get_latent_representation(query), model.get_latent_representation()
    )
    assert list(query.obs.columns) == list(before.obs.columns) and not query.uns
    query.obs["batch"] = "unseen"
    with pytest.raises(ValueError, match="batches the model was not trained on"):
        model.get_latent_representation(query)


def test_reading_view_shares_the_values_and_keeps_only_what_the_model_reads(trained_model):
    query = make_counts_adata(seed=6)
    query.obs["extra"] = 1.0
    view = trained_model.reading_view(query)
    assert np.shares_memory(view.X, query.X)
    assert view.obs_names.equals(query.obs_names) and list(view.var_names) == list(query.var_names)
    assert "extra" not in view.obs and not view.uns


def test_reading_queries_leaves_no_manager_behind(trained_model):
    """Each query is read through a new view; its scvi-tools manager must not accumulate."""
    store = trained_model._per_instance_manager_store[trained_model.id]
    before = len(store)
    query = make_counts_adata(seed=7)
    for _ in range(3):
        trained_model.get_latent_representation(query)
    trained_model.get_imputed_expression(query, return_numpy=True)
    assert len(store) == before
