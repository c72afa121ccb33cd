import tracemalloc

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from helpers import TINY_MODEL

from gexbert_sc import GexBERT, tl
from gexbert_sc.model.base._memory import (
    activation_bytes_per_sample,
    batch_size_for_budget,
    parse_memory_budget,
)


@pytest.mark.parametrize(
    ("budget", "expected"),
    [(1000, 1000), (2.5e3, 2500), ("2GB", 2 * 10**9), ("1.5 GiB", 3 * 2**29), ("512kib", 2**19)],
)
def test_parse_memory_budget(budget, expected):
    assert parse_memory_budget(budget) == expected


@pytest.mark.parametrize("budget", [0, -5, "0GB", "two GB", "3XB", float("nan"), True, [1]])
def test_bad_memory_budget_is_refused(budget):
    with pytest.raises((ValueError, TypeError), match="memory_budget"):
        parse_memory_budget(budget)


def test_batch_size_is_the_largest_that_fits():
    estimate = {"n_vars": 2000, "d_model": 64, "n_heads": 4, "n_context": 256, "n_query": 2000}
    per_sample = activation_bytes_per_sample(**estimate)
    assert batch_size_for_budget(10 * per_sample + 1, **estimate) == 10
    assert batch_size_for_budget(11 * per_sample - 1, **estimate) == 10
    # restoring genes costs more than embedding; smaller query chunks cost less
    assert per_sample > activation_bytes_per_sample(**{**estimate, "n_query": 0})
    assert per_sample > activation_bytes_per_sample(**estimate, query_chunk_size=64)
    with pytest.raises(ValueError, match="below the estimated memory of one sample"):
        batch_size_for_budget(per_sample - 1, **estimate)


def test_memory_budget_picks_the_batch_size_without_changing_the_result(trained_model, caplog):
    z = trained_model.get_latent_representation(batch_size=120)
    with caplog.at_level("INFO", logger="gexbert_sc.model.base._encoding"):
        z_budget = trained_model.get_latent_representation(memory_budget="200KB")
    assert "fits `memory_budget='200KB'`" in caplog.text
    np.testing.assert_allclose(z_budget, z, rtol=0, atol=1e-5)
    imputed = trained_model.get_imputed_expression(batch_size=120, return_numpy=True)
    imputed_budget = trained_model.get_imputed_expression(
        memory_budget="300KB", query_chunk_size=16, return_numpy=True
    )
    np.testing.assert_allclose(imputed_budget, imputed, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="either `batch_size` or `memory_budget`"):
        trained_model.get_latent_representation(batch_size=8, memory_budget="1GB")
    with pytest.raises(ValueError, match="at least 1 byte"):
        tl.embed(trained_model.adata.copy(), trained_model, memory_budget=0)


def _sparse_counts(n_obs: int, n_vars: int, nnz_per_row: int, seed: int = 0) -> ad.AnnData:
    """CSR counts with about ``nnz_per_row`` non-zero genes per sample."""
    rng = np.random.default_rng(seed)
    columns = np.sort(rng.integers(0, n_vars, size=(n_obs, nnz_per_row), dtype=np.int32), axis=1)
    values = rng.integers(1, 20, size=n_obs * nnz_per_row).astype(np.float32)
    indptr = np.arange(0, n_obs * nnz_per_row + 1, nnz_per_row)
    x = sp.csr_matrix((values, columns.ravel(), indptr), shape=(n_obs, n_vars))
    x.sum_duplicates()
    names = pd.RangeIndex(max(n_obs, n_vars)).astype(str)
    return ad.AnnData(
        x, obs=pd.DataFrame(index=names[:n_obs]), var=pd.DataFrame(index=names[:n_vars])
    )


def test_no_dense_copy_of_the_full_matrix():
    """Set-up, one training step, embedding and imputation of a few genes of a sparse matrix
    whose dense copy (2 GB) is far above the memory allowed (numpy/scipy allocations are
    traced; a dense copy anywhere in the data path makes the peak exceed it). Statistics are
    fitted on at most 5,000 samples, so the cost of fitting does not grow with ``n_obs``."""
    adata = _sparse_counts(n_obs=100_000, n_vars=5_000, nnz_per_row=50)
    dense_bytes = 4 * adata.n_obs * adata.n_vars
    allowed = 700 * 10**6
    assert dense_bytes > 2 * allowed
    tracemalloc.start()
    try:
        GexBERT.setup_anndata(adata)
        model = GexBERT(adata, **TINY_MODEL)
        model.train(
            max_epochs=1, max_steps=1, batch_size=32, train_size=1.0, enable_progress_bar=False
        )
        cells = np.arange(0, adata.n_obs, 500)
        z = model.get_latent_representation(indices=cells, memory_budget="50MB")
        genes = adata.var_names[:100]
        imputed = model.get_imputed_expression(
            indices=cells, genes=genes, memory_budget="50MB", return_numpy=True
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert z.shape == (len(cells), TINY_MODEL["d_model"])
    assert imputed.shape == (len(cells), 100)
    assert peak < allowed, (
        f"traced peak {peak / 1e6:.0f} MB (dense copy: {dense_bytes / 1e6:.0f} MB)"
    )
