"""Property-based tests (hypothesis) of binning, size factors, context choice, alignment, decoder.

Each property is the documented contract of one piece, checked on generated inputs; the models
are tiny and built once, so that the file runs in well under a minute on one core.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gexbert_sc._constants import MODULE_KEYS
from gexbert_sc.data import align_genes, fit_expression_statistics
from gexbert_sc.data._normalization import TARGET_SUM, to_model_scale
from gexbert_sc.module import GexBERTModule

N_VARS = 12
N_LEVELS = 6
SETTINGS = settings(max_examples=40, deadline=None)


@pytest.fixture(scope="module")
def module() -> GexBERTModule:
    """An untrained tiny module on ``N_VARS`` genes (eval mode; do not mutate)."""
    torch.manual_seed(0)
    edges = torch.sort(torch.rand(N_VARS, N_LEVELS - 2) * 5, dim=1).values
    counts_module = GexBERTModule(
        N_VARS,
        d_model=8,
        n_layers=1,
        n_heads=2,
        n_levels=N_LEVELS,
        n_context=4,
        n_inference_context=8,
        is_counts=True,
        bin_edges=edges,
    )
    return counts_module.eval()


#: counts: many zeros, and values up to 1e6
COUNTS = st.one_of(st.just(0.0), st.integers(0, 10**6).map(float))


def counts_matrices(max_rows: int = 4, n_cols: int = N_VARS) -> st.SearchStrategy:
    """Float32 count matrices of up to ``max_rows`` samples."""
    return arrays(np.float32, st.tuples(st.integers(1, max_rows), st.just(n_cols)), elements=COUNTS)


def masks(shape: tuple[int, ...]) -> st.SearchStrategy:
    return arrays(np.bool_, shape)


# ---------------------------------------------------------------- binning


@SETTINGS
@given(
    n_levels=st.integers(3, 10),
    data=st.data(),
)
def test_levels_are_in_range_zero_is_level_zero_and_binning_is_monotone(n_levels, data):
    n_genes = data.draw(st.integers(1, 4))
    finite = st.floats(-20, 20, width=32)
    # sorted edges, ties (collapsed edges of a constant gene) included
    edges = np.sort(data.draw(arrays(np.float32, (n_genes, n_levels - 2), elements=finite)), 1)
    values = data.draw(arrays(np.float32, (2, n_genes), elements=st.one_of(st.just(0.0), finite)))
    encoder = GexBERTModule(n_genes, d_model=4, n_heads=1, n_levels=n_levels)
    encoder.bin_edges.copy_(torch.from_numpy(edges))
    gene_idx = torch.arange(n_genes).expand(2, -1)
    levels = encoder.expression_levels(torch.from_numpy(values), gene_idx).numpy()
    assert ((levels >= 0) & (levels <= n_levels - 1)).all()  # n_levels itself is "missing"
    np.testing.assert_array_equal(levels == 0, values == 0)
    low, high = np.sort(values, axis=0)
    sorted_levels = encoder.expression_levels(torch.from_numpy(np.stack([low, high])), gene_idx)
    both_nonzero = (low != 0) & (high != 0)
    non_negative = low >= 0
    increasing = sorted_levels[0] <= sorted_levels[1]
    assert increasing[torch.from_numpy(both_nonzero | non_negative)].all()


@SETTINGS
@given(matrix=counts_matrices(max_rows=8, n_cols=5), is_counts=st.booleans())
def test_fitted_bin_edges_are_sorted_and_drawn_from_the_non_zero_values(matrix, is_counts):
    """Edges are nearest-rank quantiles of a gene's non-zero log values (0 without any)."""
    stats = fit_expression_statistics(matrix, None, is_counts, 8, np.arange(5), n_axes=4)
    edges = stats.bin_edges
    assert (np.diff(edges, axis=1) >= 0).all()
    y, _ = to_model_scale(
        torch.from_numpy(matrix),
        torch.ones(matrix.shape, dtype=torch.bool),
        torch.from_numpy(stats.gene_share),
        is_counts,
    )
    for gene in range(5):
        nonzero = y[:, gene][y[:, gene] != 0].numpy()
        if len(nonzero):
            distance = np.abs(edges[gene][:, None] - nonzero[None, :]).min(axis=1)
            assert (distance <= 1e-5 * max(1.0, np.abs(nonzero).max())).all()
        else:
            assert (edges[gene] == 0).all()


@SETTINGS
@given(matrix=counts_matrices(), data=st.data())
def test_missing_values_never_reach_the_model(module, matrix, data):
    """A missing entry is the missing token whatever value is stored under it."""
    missing = data.draw(masks(matrix.shape))
    other = data.draw(arrays(np.float32, matrix.shape, elements=COUNTS))
    batch = torch.zeros(len(matrix), 1)
    genes = torch.arange(N_VARS)
    restorations = []
    for stored in (matrix, np.where(missing, other, matrix), np.where(missing, np.nan, matrix)):
        out = module.inference(torch.from_numpy(stored), torch.from_numpy(missing), batch)
        context = out[MODULE_KEYS.CONTEXT_IDX_KEY][out[MODULE_KEYS.CONTEXT_VALID_KEY]]
        rows = torch.nonzero(out[MODULE_KEYS.CONTEXT_VALID_KEY])[:, 0]
        assert not torch.from_numpy(missing)[rows, context].any()
        restored = module.restore(
            out[MODULE_KEYS.MEMORY_KEY],
            out[MODULE_KEYS.MEMORY_PAD_KEY],
            genes,
            batch,
            out[MODULE_KEYS.PROFILE_COEF_KEY],
        )
        restorations.append(torch.cat([out[MODULE_KEYS.Z_KEY], restored], dim=1))
    torch.testing.assert_close(restorations[1], restorations[0], rtol=0, atol=0)
    torch.testing.assert_close(restorations[2], restorations[0], rtol=0, atol=0)


@SETTINGS
@given(values=arrays(np.float32, (2, 5), elements=st.floats(0, 9, width=32)), data=st.data())
def test_hidden_tokens_read_as_missing_whatever_their_value(module, values, data):
    values = torch.from_numpy(values)
    hidden = torch.from_numpy(data.draw(masks((2, 5))))
    other = data.draw(arrays(np.float32, (2, 5), elements=st.floats(0, 9, width=32)))
    gene_idx = torch.tensor([[0, 3, 5, 7, 11], [1, 2, 4, 6, 8]])
    valid = torch.ones(2, 5, dtype=torch.bool)
    summary = torch.zeros(2, module.d_model)
    first = module.encode(gene_idx, values, valid, summary, hidden)[0]
    changed = torch.where(hidden, torch.from_numpy(other), values)
    second = module.encode(gene_idx, changed, valid, summary, hidden)[0]
    torch.testing.assert_close(second, first, rtol=0, atol=0)


# ---------------------------------------------------------------- size factors


def shares(n_genes: int) -> st.SearchStrategy:
    """Library shares summing to 1 (as fitted), none of them zero."""
    weights = arrays(np.float64, n_genes, elements=st.floats(0.01, 1.0))
    return weights.map(lambda w: torch.from_numpy(w / w.sum()).float())


@SETTINGS
@given(matrix=counts_matrices(), share=shares(N_VARS), data=st.data())
def test_unobserved_entries_are_ignored_and_nan_equals_the_missing_mask(
    module, matrix, share, data
):
    observed = data.draw(masks(matrix.shape))
    junk = data.draw(arrays(np.float32, matrix.shape, elements=st.floats(width=32)))
    x = torch.from_numpy(matrix)
    y, factors = to_model_scale(x, torch.from_numpy(observed), share, True)
    y_junk, factors_junk = to_model_scale(
        torch.from_numpy(np.where(observed, matrix, junk)), torch.from_numpy(observed), share, True
    )
    torch.testing.assert_close(y_junk, y, rtol=0, atol=0)
    torch.testing.assert_close(factors_junk, factors, rtol=0, atol=0)
    # NaN and the missing layer are two spellings of the same thing
    with_nan = module.prepare_values(torch.from_numpy(np.where(observed, matrix, np.nan)))
    with_mask = module.prepare_values(x, torch.from_numpy(~observed).float())
    for a, b in zip(with_nan, with_mask, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@SETTINGS
@given(matrix=counts_matrices(), share=shares(N_VARS), data=st.data())
def test_normalised_values_are_zero_for_zeros_and_at_most_a_whole_library(matrix, share, data):
    """``0 <= y <= log1p(1e4)``: no restoration target can leave that range."""
    observed = torch.from_numpy(data.draw(masks(matrix.shape)))
    x = torch.from_numpy(matrix)
    y, factors = to_model_scale(x, observed, share, True)
    assert (factors > 0).all() and torch.isfinite(factors).all()
    assert (y >= 0).all() and (y <= np.log1p(TARGET_SUM) * (1 + 1e-6)).all()
    torch.testing.assert_close(y[observed] == 0, x[observed] == 0)


@SETTINGS
@given(
    matrix=counts_matrices(),
    share=shares(N_VARS),
    scale=st.floats(1e-3, 1e3),
    data=st.data(),
)
def test_size_factors_cancel_library_size(matrix, share, scale, data):
    """Scaling a sample's counts scales its size factor, not its normalised values."""
    observed = torch.from_numpy(data.draw(masks(matrix.shape)))
    x = torch.from_numpy(matrix)
    y, factors = to_model_scale(x, observed, share, True)
    y_scaled, factors_scaled = to_model_scale(x * scale, observed, share, True)
    torch.testing.assert_close(y_scaled, y, rtol=1e-5, atol=1e-5)
    has_counts = torch.where(observed, x, 0.0).sum(1) > 0
    torch.testing.assert_close(factors_scaled[has_counts], factors[has_counts] * scale)


@SETTINGS
@given(matrix=counts_matrices(), share=shares(N_VARS), data=st.data())
def test_hiding_genes_at_their_expected_share_leaves_the_other_values_unchanged(
    matrix, share, data
):
    """Hidden genes drop out of the size factor without moving the observed values.

    Exactly so when the hidden genes hold their expected share of the library: the size factor
    estimated from the remaining genes is the one estimated from all of them. (Hidden genes
    above or below their share move it, as they must: the model cannot know them.)
    """
    hidden = torch.from_numpy(data.draw(masks(matrix.shape)))
    x = torch.from_numpy(matrix)
    kept_total = torch.where(~hidden, x, 0.0).sum(1, keepdim=True)
    kept_share = torch.where(~hidden, share, 0.0).sum(1, keepdim=True)
    assume(bool((kept_total > 0).all()))
    # hidden genes at their expected share of the library the kept genes imply
    x = torch.where(hidden, share * kept_total / kept_share, x)
    everything = torch.ones_like(hidden)
    y_all, factors_all = to_model_scale(x, everything, share, True)
    y_kept, factors_kept = to_model_scale(x, ~hidden, share, True)
    torch.testing.assert_close(factors_kept, factors_all, rtol=1e-5, atol=0)
    torch.testing.assert_close(y_kept[~hidden], y_all[~hidden], rtol=1e-5, atol=1e-5)


@SETTINGS
@given(matrix=counts_matrices().filter(lambda m: (m.sum(1) > 0).all()), share=shares(N_VARS))
def test_whole_profiles_are_normalize_total_then_log1p(matrix, share):
    x = torch.from_numpy(matrix)
    y, _ = to_model_scale(x, torch.ones_like(x, dtype=torch.bool), share, True)
    expected = np.log1p(matrix / matrix.sum(1, keepdims=True, dtype=np.float64) * TARGET_SUM)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- context selection


@SETTINGS
@given(
    observed=arrays(np.bool_, st.tuples(st.integers(1, 4), st.just(N_VARS))),
    data=st.data(),
    size=st.integers(1, 2 * N_VARS),
    random=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_context_is_distinct_observed_genes_non_zero_first(
    module, observed, data, size, random, seed
):
    nonzero = observed & data.draw(masks(observed.shape))
    observed, nonzero = torch.from_numpy(observed), torch.from_numpy(nonzero)

    def select(generator_seed: int, rows: slice = slice(None)):
        generator = torch.Generator().manual_seed(generator_seed)
        return module.select_context(observed[rows], nonzero[rows], size, random, generator)

    gene_idx, valid = select(seed)
    n_observed, n_nonzero = observed.sum(1), nonzero.sum(1)
    expected = torch.clamp(n_observed, max=size)
    if not random:  # zeros fill the fixed context only up to the training size
        expected = torch.minimum(expected, torch.clamp(n_nonzero, min=module.n_context))
    torch.testing.assert_close(valid.sum(1), expected)
    for row in range(len(observed)):
        genes = gene_idx[row][valid[row]]
        assert len(set(genes.tolist())) == len(genes)  # distinct
        assert observed[row, genes].all()
        flags = nonzero[row, genes]
        assert (flags[:-1] >= flags[1:]).all()  # non-zero genes first
        if not flags.all():  # a zero gene is read only once every non-zero gene is
            assert flags.sum() == n_nonzero[row]
    same = select(seed)
    assert torch.equal(same[0], gene_idx) and torch.equal(same[1], valid)
    if not random:  # the fixed context ignores the generator and the other samples
        other = select(seed + 1)
        assert torch.equal(other[0], gene_idx) and torch.equal(other[1], valid)
        for row in range(len(observed)):
            alone_idx, alone_valid = select(seed, slice(row, row + 1))
            assert torch.equal(alone_idx[0][alone_valid[0]], gene_idx[row][valid[row]])


# ---------------------------------------------------------------- gene alignment

GENE_POOL = [f"g{i}" for i in range(10)]


@st.composite
def alignment_cases(draw) -> tuple[ad.AnnData, list[str]]:
    """A query AnnData (dense or sparse, with a mask layer) and reference genes."""
    reference = draw(st.lists(st.sampled_from(GENE_POOL), min_size=1, max_size=8, unique=True))
    genes = draw(st.lists(st.sampled_from(GENE_POOL), min_size=1, max_size=8, unique=True))
    assume(set(genes) & set(reference))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    width = np.finfo(dtype).bits
    element = st.one_of(st.just(0.0), st.just(np.nan), st.floats(-1e6, 1e6, width=width))
    values = draw(arrays(dtype, (draw(st.integers(1, 4)), len(genes)), elements=element))
    layout = draw(st.sampled_from(["dense", "csr", "csc"]))
    matrix = values if layout == "dense" else getattr(sp, f"{layout}_matrix")(values)
    query = ad.AnnData(matrix, var=pd.DataFrame(index=genes))
    query.layers["missing"] = draw(masks(values.shape))
    return query, reference


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


@SETTINGS
@given(case=alignment_cases(), data=st.data())
def test_alignment_keeps_shared_values_exactly_and_marks_absent_genes_missing(case, data):
    query, reference = case
    aligned = align_genes(query, reference)
    assert list(aligned.var_names) == reference
    x, mask = _dense(aligned.X), _dense(aligned.layers["missing"])
    source, source_mask = _dense(query.X), _dense(query.layers["missing"])
    for j, gene in enumerate(reference):
        if gene in query.var_names:
            k = query.var_names.get_loc(gene)
            np.testing.assert_array_equal(x[:, j], source[:, k])  # NaN where NaN, 0 where 0
            assert x[:, j].dtype == np.result_type(source.dtype, np.float32)
            np.testing.assert_array_equal(mask[:, j], source_mask[:, k])
        else:
            assert np.isnan(x[:, j]).all() and mask[:, j].all()  # missing, never zero
    # idempotent, and blind to the query's column order
    again = align_genes(aligned, reference)
    np.testing.assert_array_equal(_dense(again.X), x)
    order = data.draw(st.permutations(range(query.n_vars)))
    shuffled = align_genes(query[:, list(order)].copy(), reference)
    np.testing.assert_array_equal(_dense(shuffled.X), x)
    np.testing.assert_array_equal(_dense(shuffled.layers["missing"]), mask)


# ---------------------------------------------------------------- decoder


@pytest.fixture(scope="module")
def restored_alone(trained_model) -> np.ndarray:
    """Each gene of the shared trained model restored in a call of its own (8 samples)."""
    columns = [
        model_restoration(trained_model, [gene], query_chunk_size=1)
        for gene in trained_model.var_names
    ]
    return np.concatenate(columns, axis=1)


def model_restoration(model, genes: list[str], query_chunk_size: int) -> np.ndarray:
    return model.get_imputed_expression(
        indices=np.arange(8),
        genes=genes,
        keep_observed=False,
        query_chunk_size=query_chunk_size,
        return_numpy=True,
    )


@settings(max_examples=15, deadline=None)
@given(data=st.data(), query_chunk_size=st.integers(1, 50))
def test_a_gene_restores_the_same_whatever_else_is_queried(
    trained_model, restored_alone, data, query_chunk_size
):
    names = list(trained_model.var_names)
    genes = data.draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    restored = model_restoration(trained_model, genes, query_chunk_size)
    expected = restored_alone[:, [names.index(gene) for gene in genes]]
    np.testing.assert_allclose(restored, expected, rtol=1e-5, atol=1e-6)
