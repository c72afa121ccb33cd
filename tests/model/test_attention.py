"""get_attention_scores: [CLS] attention per gene and group, normalised for context."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import TINY_MODEL, TINY_TRAIN, make_counts_adata

import gexbert_sc
from gexbert_sc.model.base._attention import cls_gene_attention, shrunk_mean


@pytest.fixture(scope="module")
def two_block_model():
    adata = make_counts_adata(seed=2)
    gexbert_sc.GexBERT.setup_anndata(adata)
    model = gexbert_sc.GexBERT(adata, **{**TINY_MODEL, "n_layers": 2}, seed=0)
    model.train(**TINY_TRAIN)
    return model


def test_cls_gene_attention_of_each_method_by_hand():
    torch.manual_seed(0)
    batch, layers, heads, tokens = 2, 3, 2, 5
    full = torch.rand(batch, layers, heads, tokens, tokens).softmax(-1)
    valid = torch.tensor([[True] * 4, [True, True, False, False]])
    full = full.masked_fill(
        ~torch.cat([torch.ones(2, 1, dtype=bool), valid], 1)[:, None, None, None, :], 0
    )
    full = full / full.sum(-1, keepdim=True)
    cls_rows = full[..., 0, :]

    def scaled(row):
        genes = row[:, 1:] * valid
        return genes / genes.sum(1, keepdim=True) * valid.sum(1, keepdim=True)

    torch.testing.assert_close(
        cls_gene_attention(cls_rows, valid, "last"), scaled(cls_rows[:, -1].mean(1))
    )
    torch.testing.assert_close(
        cls_gene_attention(cls_rows, valid, "mean"), scaled(cls_rows.mean((1, 2)))
    )
    mixed = 0.5 * full.mean(2) + 0.5 * torch.eye(tokens)
    mixed = mixed / mixed.sum(-1, keepdim=True)
    rollout = mixed[:, 2] @ mixed[:, 1] @ mixed[:, 0]
    result = cls_gene_attention(full, valid, "rollout")
    torch.testing.assert_close(result, scaled(rollout[:, 0]))
    # padding gets nothing; each sample's weights sum to its number of context genes
    assert (result[~valid] == 0).all()
    torch.testing.assert_close(result.sum(1), valid.sum(1).float())


def test_shrunk_mean_pulls_rare_genes_toward_uniform():
    sums, counts = np.array([6.0, 30.0, 0.0]), np.array([2.0, 10.0, 0.0])
    np.testing.assert_allclose(shrunk_mean(sums, counts, 2.0), [2.0, 32 / 12, 1.0])
    assert np.isnan(shrunk_mean(sums, counts, 0.0)[2])


@pytest.mark.parametrize("method", ["last", "mean", "rollout"])
def test_scores_are_finite_normalised_and_deterministic(two_block_model, method):
    model = two_block_model
    scores = model.get_attention_scores(method=method, prior=0.0)
    assert list(scores.columns) == ["group", "gene", "score", "rank", "context_fraction"]
    assert len(scores) == model.adata.n_vars and (scores["group"] == "all").all()
    held = scores["context_fraction"] > 0
    assert np.isfinite(scores.loc[held, "score"]).all() and (scores["score"][held] > 0).all()
    # relative attention: 1 is the uniform share, so the mean over every context token is 1
    counts = scores["context_fraction"] * model.adata.n_obs
    np.testing.assert_allclose((scores["score"][held] * counts[held]).sum() / counts.sum(), 1.0)
    assert sorted(scores["rank"]) == list(range(1, model.adata.n_vars + 1))
    top = scores.loc[scores["rank"] == 1, "score"].item()
    assert top == pytest.approx(scores["score"].max())
    again = model.get_attention_scores(method=method, prior=0.0, batch_size=7)
    pd.testing.assert_frame_equal(scores, again, rtol=1e-5)


def test_methods_differ_with_two_blocks(two_block_model):
    last, rollout = (
        two_block_model.get_attention_scores(method=m)["score"] for m in ("last", "rollout")
    )
    assert not np.allclose(last, rollout)


def test_programme_genes_rank_on_top_of_their_own_group(programme_model):
    adata = programme_model.adata
    scores = programme_model.get_attention_scores(groupby="programme", versus_rest=True)
    assert {"group_score", "rest_score", "rest_context_fraction"} <= set(scores.columns)
    top_genes = {}
    for group, part in scores.groupby("group", observed=True):
        top = part.nsmallest(6, "rank")["gene"]
        assert (adata.var.loc[top, "programme"] == group).all()
        top_genes[group] = set(top)
    # different programmes, different rankings
    assert len({frozenset(genes) for genes in top_genes.values()}) == 3
    # without `versus_rest`, the group's own programme still leads its plain score
    plain = programme_model.get_attention_scores(groupby="programme")
    for group, part in plain.groupby("group", observed=True):
        assert set(part.nsmallest(6, "rank")["gene"]) == top_genes[group]


def test_a_subset_of_samples_reads_only_those(programme_model):
    adata = programme_model.adata
    rows = np.flatnonzero(adata.obs["programme"] == "p1")
    scores = programme_model.get_attention_scores(indices=rows, groupby="programme")
    assert list(scores["group"].cat.categories) == ["p1"]


def test_bad_arguments_give_clear_errors(two_block_model):
    model = two_block_model
    with pytest.raises(ValueError, match="`method` must be one of"):
        model.get_attention_scores(method="max")
    with pytest.raises(ValueError, match="`prior` must be a number >= 0, got -1"):
        model.get_attention_scores(prior=-1)
    with pytest.raises(KeyError, match="`groupby='tissue'` is not a column"):
        model.get_attention_scores(groupby="tissue")
    with pytest.raises(ValueError, match="`versus_rest=True` needs at least two groups"):
        model.get_attention_scores(versus_rest=True)
    query = model.adata.copy()
    query.obs["cell_type"] = query.obs["cell_type"].astype(object)
    query.obs.iloc[0, query.obs.columns.get_loc("cell_type")] = np.nan
    before = query.obs.copy()
    with pytest.raises(ValueError, match=r"has 1 missing values"):
        model.get_attention_scores(query, groupby="cell_type")
    pd.testing.assert_frame_equal(query.obs, before)
