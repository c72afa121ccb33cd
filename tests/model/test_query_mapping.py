"""Mapping new data onto a trained model: alignment, its report, sparse storage, fine-tuning."""

from __future__ import annotations

import tracemalloc

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from anndata.tests.helpers import assert_equal
from helpers import TINY_MODEL, TINY_TRAIN, assert_fp32_path_close, make_counts_adata

from gexbert_sc import GexBERT, tl
from gexbert_sc.data import AlignmentReport, align_genes

ONE_EPOCH = {**TINY_TRAIN, "max_epochs": 1}


@pytest.fixture(scope="module")
def reference() -> GexBERT:
    """A tiny model trained on counts with two batches (shared, do not mutate)."""
    adata = make_counts_adata(seed=1)
    GexBERT.setup_anndata(adata, batch_key="batch", labels_key="cell_type")
    model = GexBERT(adata, **TINY_MODEL)
    model.train(**TINY_TRAIN)
    return model


@pytest.fixture(scope="module")
def saved_reference(reference, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("reference") / "model"
    reference.save(path)
    return str(path)


def _query(sparse: bool = False, seed: int = 2) -> ad.AnnData:
    """30 of the reference's 40 genes, in another order, plus two genes it does not know."""
    adata = make_counts_adata(n_obs=60, n_vars=42, seed=seed)
    names = [f"gene_{j}" for j in range(10, 40)][::-1] + ["novel_a", "novel_b"]
    adata.var_names = names + [f"extra_{j}" for j in range(10)]
    adata = adata[:, :32].copy()
    del adata.obs["cell_type"]
    if sparse:
        adata.X = sp.csr_matrix(adata.X)
    return adata


# ---------------------------------------------------------------- prepare_query_anndata


def test_prepare_query_anndata_aligns_and_reports(reference, tmp_path):
    query = _query()
    before = query.copy()
    aligned, report = GexBERT.prepare_query_anndata(query, reference, return_report=True)
    assert_equal(query, before)  # the query is never modified
    assert list(aligned.var_names) == list(reference.var_names)
    assert np.isnan(aligned.X[:, :10]).all()  # missing, never zero
    np.testing.assert_array_equal(aligned.X[:, 10:], query[:, 29::-1].X)
    assert isinstance(report, AlignmentReport)
    assert (report.n_model_genes, report.n_shared, report.n_dropped) == (40, 30, 2)
    assert report.missing_genes == [f"gene_{j}" for j in range(10)]
    assert report.extra_genes == ["novel_a", "novel_b"]
    assert str(report).startswith("Matched 30 of the model's 40 genes on var_names; 10 missing")
    stored = aligned.uns["gexbert_alignment"]
    assert stored == report.as_uns() and stored["n_shared"] == 30
    aligned.write_h5ad(tmp_path / "aligned.h5ad")  # the report is storable
    assert ad.read_h5ad(tmp_path / "aligned.h5ad").uns["gexbert_alignment"]["n_dropped"] == 2
    alone = GexBERT.prepare_query_anndata(query, reference)
    assert isinstance(alone, ad.AnnData) and alone.var_names.equals(aligned.var_names)


def test_prepare_query_anndata_reads_a_saved_reference(reference, saved_reference):
    from_path = GexBERT.prepare_query_anndata(_query(), saved_reference)
    from_model = GexBERT.prepare_query_anndata(_query(), reference)
    assert_equal(from_path, from_model)


def test_matching_on_a_var_column_ignores_case_and_ensembl_versions(reference):
    query = _query()
    query.var["symbols"] = [name.upper() for name in query.var_names]
    query.var_names = [f"id_{j}" for j in range(query.n_vars)]
    aligned, report = GexBERT.prepare_query_anndata(
        query, reference, var_key="symbols", return_report=True
    )
    assert report.n_shared == 30 and report.var_key == "symbols"
    assert report.extra_genes == ["NOVEL_A", "NOVEL_B"]
    np.testing.assert_array_equal(aligned.X[:, 10:], query[:, 29::-1].X)
    ensembl = ad.AnnData(np.eye(3, dtype=np.float32))
    ensembl.var_names = ["ENSG00000141510.17", "ensg00000012048.2", "ENSG00000000003"]
    model_ids = ["ENSG00000012048", "ENSG00000141510", "ENSG00000000003.9"]
    aligned = align_genes(ensembl, model_ids)
    assert list(aligned.var_names) == model_ids
    np.testing.assert_array_equal(aligned.X, np.eye(3)[:, [1, 0, 2]])


def test_exact_names_match_before_case_insensitive_ones():
    adata = ad.AnnData(np.array([[1.0, 2.0]], dtype=np.float32))
    adata.var_names = ["TP53", "tp53"]
    np.testing.assert_array_equal(align_genes(adata, ["tp53"]).X, [[2.0]])


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "message"),
    [
        (
            lambda a: setattr(a, "var_names", [f"other_{j}" for j in range(a.n_vars)]),
            {},
            ValueError,
            r"shares no gene with the model's 40 genes .*first data genes: \['other_0'",
        ),
        (
            lambda a: setattr(a, "var_names", ["GENE_39", "Gene_39", *a.var_names[2:]]),
            {},
            ValueError,
            r"Ambiguous gene match: query genes \['GENE_39', 'Gene_39'\] all match model "
            r"genes \['gene_39'\]",
        ),
        (
            lambda a: None,
            {"var_key": "gene_ids"},
            KeyError,
            r"`var_key='gene_ids'` is not a column of `adata.var`",
        ),
    ],
    ids=["no-shared-gene", "ambiguous", "unknown-var-key"],
)
def test_bad_queries_are_refused_and_left_unchanged(reference, change, kwargs, error, message):
    query = _query(sparse=True)
    change(query)
    before = query.copy()
    with pytest.raises(error, match=message):
        GexBERT.prepare_query_anndata(query, reference, **kwargs)
    with pytest.raises(error, match=message):
        GexBERT.load_query_data(query, reference, **kwargs)
    assert_equal(query, before)


def test_bad_reference_is_refused(tmp_path):
    with pytest.raises(TypeError, match="`reference` must be a trained GexBERT .* got int"):
        GexBERT.prepare_query_anndata(_query(), 42)
    with pytest.raises(FileNotFoundError, match="is not a saved model directory"):
        GexBERT.prepare_query_anndata(_query(), tmp_path)
    with pytest.raises(TypeError, match="`adata` must be an AnnData, got ndarray"):
        GexBERT.prepare_query_anndata(np.zeros((2, 2)), ["a", "b"])


# ---------------------------------------------------------------- sparse storage


def test_sparse_query_reads_as_its_dense_version(reference):
    dense = GexBERT.prepare_query_anndata(_query(sparse=False), reference)
    sparse = GexBERT.prepare_query_anndata(_query(sparse=True), reference)
    assert sp.issparse(sparse.X) and sparse.X.has_sorted_indices
    assert sparse.X.nnz == np.count_nonzero(dense.X)  # stored: shared entries + NaN
    np.testing.assert_array_equal(sparse.X.toarray(), dense.X)
    assert_fp32_path_close(
        reference.get_latent_representation(sparse), reference.get_latent_representation(dense)
    )


def test_sparse_alignment_keeps_float64_values_exactly():
    values = np.random.default_rng(0).random((4, 3)) / 3
    values[values < 0.5] = 0
    adata = ad.AnnData(sp.csr_matrix(values))
    adata.var_names = ["a", "b", "c"]
    aligned = align_genes(adata, ["c", "z", "a"])
    assert aligned.X.dtype == np.float64
    np.testing.assert_array_equal(aligned.X[:, [0, 2]].toarray(), values[:, [2, 0]])
    assert np.isnan(aligned.X[:, 1].toarray()).all()


@pytest.mark.parametrize("sparse", [True, False])
def test_backed_query_is_aligned_block_by_block(reference, tmp_path, sparse):
    _query(sparse).write_h5ad(tmp_path / "query.h5ad")
    backed = ad.read_h5ad(tmp_path / "query.h5ad", backed="r")
    aligned = GexBERT.prepare_query_anndata(backed, reference)
    backed.file.close()
    expected = GexBERT.prepare_query_anndata(_query(sparse), reference)
    assert sp.issparse(aligned.X) == sparse
    assert_equal(aligned.X, expected.X)


def test_aligning_a_large_sparse_query_allocates_no_dense_block():
    """20,000 samples × 5,000 genes at 1% density; the model lacks 500 of its genes.

    A dense float32 block of the result would take 400 MB; the CSR result stores ~1M values
    plus 20,000 × 500 NaN (8 bytes each with their column index): ~87 MB.
    """
    n_obs, n_vars, n_absent = 20_000, 5_000, 500
    matrix = sp.random(n_obs, n_vars, density=0.01, format="csr", dtype=np.float32, rng=0)
    query = ad.AnnData(matrix, var=pd.DataFrame(index=[f"g{j}" for j in range(n_vars)]))
    rng = np.random.default_rng(0)
    shared = rng.permutation(n_vars)[: n_vars - n_absent]
    model_genes = [f"g{j}" for j in shared] + [f"absent_{j}" for j in range(n_absent)]
    tracemalloc.start()
    aligned = align_genes(query, rng.permutation(model_genes))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    dense_bytes = n_obs * n_vars * 4
    stored_bytes = aligned.X.data.nbytes + aligned.X.indices.nbytes + aligned.X.indptr.nbytes
    assert aligned.X.nnz == n_obs * n_absent + np.isin(matrix.indices, shared).sum()
    assert peak < 1.5 * stored_bytes < dense_bytes / 3, (peak, stored_bytes, dense_bytes)


def test_impute_of_some_genes_of_a_sparse_query_stays_sparse(reference):
    sparse = GexBERT.prepare_query_anndata(_query(sparse=True), reference)
    dense = GexBERT.prepare_query_anndata(_query(sparse=False), reference)
    genes = ["gene_2", "gene_20"]
    for query in (sparse, dense):
        tl.impute(query, reference, genes=genes, n_samples=2)
    layer = sparse.layers["gexbert_imputed"]
    assert sp.isspmatrix_csr(layer) and layer.nnz <= sparse.X.nnz + sparse.n_obs * len(genes)
    assert_fp32_path_close(layer.toarray(), dense.layers["gexbert_imputed"])
    spread = sparse.layers["gexbert_imputed_std"]
    assert sp.issparse(spread)
    assert_fp32_path_close(spread.toarray(), dense.layers["gexbert_imputed_std"])


# ---------------------------------------------------------------- load_query_data


def _weights(model: GexBERT) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.module.named_parameters()}


@pytest.mark.parametrize("freeze_encoder", [True, False])
def test_load_query_data_fine_tunes_a_copy(reference, freeze_encoder):
    reference_weights = _weights(reference)
    query = _query(sparse=True)
    before = query.copy()
    model = GexBERT.load_query_data(query, reference, freeze_encoder=freeze_encoder)
    assert_equal(query, before)  # aligned into a copy, which the model holds
    assert model is not reference and not model.is_trained
    assert model.adata.var_names.equals(reference.var_names) and model.adata.n_obs == 60
    encoder = set(model.module.encoder_parameter_names)
    start = _weights(model)
    for name, weight in start.items():
        assert torch.equal(weight, reference_weights[name])
        assert model.module.get_parameter(name).requires_grad == (
            not freeze_encoder or name not in encoder
        )
    model.train(**ONE_EPOCH)
    trained = _weights(model)
    for name in trained:
        unchanged = torch.equal(trained[name], start[name])
        assert unchanged == (freeze_encoder and name in encoder), name
    for name, weight in _weights(reference).items():  # the reference is untouched
        assert torch.equal(weight, reference_weights[name])
    assert np.isfinite(model.get_latent_representation()).all()


def test_load_query_data_sets_up_an_aligned_query_in_place(reference, saved_reference):
    aligned = GexBERT.prepare_query_anndata(_query(), reference)
    model = GexBERT.load_query_data(aligned, saved_reference)
    assert model.adata is aligned
    assert model.hparams == reference.hparams
    np.testing.assert_array_equal(
        model.module.batch_emb.weight.detach(), reference.module.batch_emb.weight.detach()
    )
    assert model.adata_manager.get_state_registry("batch")["categorical_mapping"].tolist() == [
        "a",
        "b",
    ]


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "message"),
    [
        (lambda a: None, {"freeze_encoder": "yes"}, TypeError, "`freeze_encoder` must be True"),
        (
            lambda a: a.obs.__setitem__("batch", pd.Categorical(["c"] * a.n_obs)),
            {},
            ValueError,
            r"has batches the model was not trained on: \['c'\]",
        ),
        (
            lambda a: a.obs.drop(columns="batch", inplace=True),
            {},
            KeyError,
            "`batch_key='batch'` is not a column of `adata.obs`",
        ),
        (
            lambda a: setattr(a, "X", np.log1p(a.X)),
            {},
            ValueError,
            "trained on counts, but `adata.X` holds values that are not integers",
        ),
    ],
    ids=["freeze-not-bool", "unseen-batch", "no-batch-column", "log-values"],
)
def test_load_query_data_refuses_bad_input_before_touching_it(
    reference, change, kwargs, error, message
):
    query = GexBERT.prepare_query_anndata(_query(), reference)  # would be set up in place
    change(query)
    before = query.copy()
    with pytest.raises(error, match=message):
        GexBERT.load_query_data(query, reference, **kwargs)
    assert_equal(query, before)


def test_load_query_data_refuses_another_model_class(reference):
    from gexbert_sc import GexBERTClassifier

    classifier = GexBERTClassifier.from_gexbert_model(reference, adata=reference.adata.copy())
    with pytest.raises(TypeError, match="`reference` must be a trained GexBERT .*GexBERTClass"):
        GexBERT.load_query_data(_query(), classifier)


def test_load_query_data_maps_an_anndata_query_onto_a_mudata_reference():
    """A reference set up with a MuData (on a layer, with batches) takes an AnnData query."""
    import mudata

    rna = make_counts_adata()
    rna.layers["counts"] = rna.X.copy()
    rna.X = np.log1p(rna.X)
    mdata = mudata.MuData({"rna": rna})
    mdata.obs["batch"] = rna.obs["batch"].to_numpy()
    GexBERT.setup_mudata(
        mdata, rna_layer="counts", batch_key="batch", modalities={"rna_layer": "rna"}
    )
    model = GexBERT(mdata, **TINY_MODEL)
    model.train(**ONE_EPOCH)
    query = rna[:, ::-1].copy()  # other gene order: aligned into a copy
    query.obs = query.obs[["batch"]].copy()
    query.obs["batch"] = pd.Categorical(["b"] * query.n_obs)
    mapped = GexBERT.load_query_data(query, model)
    assert mapped.registry_["setup_args"]["layer"] == "counts"
    assert list(mapped._registered_categories("batch")) == ["a", "b"]
    read = next(mapped.minibatches(batch_size=query.n_obs))
    np.testing.assert_array_equal(read["X"].numpy(), rna.layers["counts"])  # model's gene order
    np.testing.assert_array_equal(read["batch"].numpy().ravel(), np.ones(query.n_obs))
    mapped.train(**ONE_EPOCH)
    assert np.isfinite(mapped.get_latent_representation()).all()


def test_load_query_data_on_a_reference_without_batches(trained_model):
    model = GexBERT.load_query_data(_query(sparse=True), trained_model, freeze_encoder=True)
    assert model.summary_stats.n_batch == 1
    model.train(**ONE_EPOCH)
    assert np.isfinite(model.get_latent_representation()).all()
