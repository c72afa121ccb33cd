"""tl.gene_embedding into varm and tl.gene_similarity (nearest genes by cosine)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch

import gexbert_sc


def test_gene_embedding_writes_the_model_embeddings(trained_model):
    adata = trained_model.adata.copy()
    gexbert_sc.tl.gene_embedding(adata, trained_model)
    np.testing.assert_array_equal(
        adata.varm["gexbert_gene_embedding"], trained_model.get_gene_embeddings().to_numpy()
    )
    assert "gexbert_gene_embedding" in adata.uns["gexbert"]["outputs"]


def test_gene_embedding_follows_the_callers_genes(trained_model):
    genes = [*trained_model.var_names[:3][::-1], "unknown_gene"]
    adata = ad.AnnData(np.zeros((2, 4), dtype=np.float32))
    adata.var_names = genes
    out = gexbert_sc.tl.gene_embedding(adata, trained_model, key_added="emb", copy=True)
    embeddings = trained_model.get_gene_embeddings()
    np.testing.assert_array_equal(out.varm["emb"][:3], embeddings.loc[genes[:3]].to_numpy())
    assert np.isnan(out.varm["emb"][3]).all()
    assert "emb" not in adata.varm


def test_gene_similarity_finds_a_gene_with_the_same_direction(trained_model):
    model = trained_model
    weights = model.module.gene_emb.weight
    saved = weights.detach().clone()
    try:
        with torch.no_grad():
            weights[5] = 2.0 * weights[0]
        table = gexbert_sc.tl.gene_similarity(model, [model.var_names[0], model.var_names[1]], n=4)
    finally:
        with torch.no_grad():
            weights.copy_(saved)
    assert list(table.columns) == ["gene", "neighbour", "similarity", "rank"]
    first = table[table["gene"] == model.var_names[0]]
    assert first["neighbour"].iloc[0] == model.var_names[5]
    assert first["similarity"].iloc[0] == pytest.approx(1.0)
    assert (np.diff(first["similarity"]) <= 0).all() and list(first["rank"]) == [1, 2, 3, 4]
    assert model.var_names[0] not in set(first["neighbour"])


def test_gene_similarity_errors(trained_model):
    with pytest.raises(KeyError, match="unknown to the model"):
        gexbert_sc.tl.gene_similarity(trained_model, "not_a_gene")
    with pytest.raises(ValueError, match="`n` must be below the model's 40 genes"):
        gexbert_sc.tl.gene_similarity(trained_model, trained_model.var_names[0], n=40)
    with pytest.raises(ValueError, match="`n`"):
        gexbert_sc.tl.gene_similarity(trained_model, trained_model.var_names[0], n=0)
