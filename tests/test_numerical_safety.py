"""Extreme but valid values never give a NaN loss or NaN outputs, in fp32 and in bf16.

Counts up to 1e7, constant genes (all-zero ones included), samples with a single non-zero
gene, identical or proportional profiles and all-zero data: the fitted statistics stay
finite, and so do the training loss, the embedding and the restorations, with and without
bf16 autocast (emulated on CPUs without native bf16; the models are tiny).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import TINY_MODEL
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gexbert_sc import GexBERT
from gexbert_sc._constants import MODULE_KEYS
from gexbert_sc.data import ExpressionStatistics, fit_expression_statistics
from gexbert_sc.module import GexBERTModule

N_LEVELS = 8
D_MODEL = 8
PRECISIONS = ["32-true", "bf16-mixed"]
AUTOCAST = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def _fit(matrix: np.ndarray, is_counts: bool = True) -> ExpressionStatistics:
    names = np.array([f"g{j}" for j in range(matrix.shape[1])])
    return fit_expression_statistics(matrix, None, is_counts, N_LEVELS, names, n_axes=D_MODEL)


def _module(stats: ExpressionStatistics, is_counts: bool = True) -> GexBERTModule:
    torch.manual_seed(0)
    arrays_ = {
        name: torch.from_numpy(getattr(stats, name))
        for name in ("gene_share", "bin_edges", "gene_mean", "principal_axes")
    }
    n_vars = len(stats.gene_share)
    return GexBERTModule(
        n_vars,
        d_model=D_MODEL,
        n_layers=1,
        n_heads=2,
        n_levels=N_LEVELS,
        n_context=6,
        n_inference_context=12,
        is_counts=is_counts,
        **arrays_,
    )


def _module_outputs(module: GexBERTModule, x: torch.Tensor, dtype: torch.dtype | None) -> dict:
    """A training step's loss and an inference pass's embedding and restorations."""
    batch = torch.zeros(len(x), 1)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=bool(dtype)):
        module.train()
        encoding = {**module.training_encoding, "generator": torch.Generator().manual_seed(0)}
        inference = module.inference(x, None, batch, encoding=encoding)
        generative = module.generative(
            *(inference[key] for key in (MODULE_KEYS.MEMORY_KEY, MODULE_KEYS.MEMORY_PAD_KEY)),
            inference[MODULE_KEYS.TARGET_IDX_KEY],
            batch,
            inference[MODULE_KEYS.PROFILE_COEF_KEY],
        )
        loss = module.loss({}, inference, generative).loss
        module.eval()
        out = module.inference(x, None, batch)
        restored = module.restore(
            out[MODULE_KEYS.MEMORY_KEY],
            out[MODULE_KEYS.MEMORY_PAD_KEY],
            torch.arange(x.shape[1]),
            batch,
            out[MODULE_KEYS.PROFILE_COEF_KEY],
        )
    return {"loss": loss, "z": out[MODULE_KEYS.Z_KEY], "restored": restored}


def _assert_finite_statistics(stats: ExpressionStatistics) -> None:
    for name in ("gene_share", "bin_edges", "gene_mean", "principal_axes"):
        assert np.isfinite(getattr(stats, name)).all(), name


# ---------------------------------------------------------------- fitted statistics


def test_all_zero_counts_get_uniform_library_shares():
    """No library to share out: uniform shares (they were 0/0 = NaN)."""
    stats = _fit(np.zeros((10, 5), dtype=np.float32))
    _assert_finite_statistics(stats)
    np.testing.assert_allclose(stats.gene_share, np.full(5, 0.2))


@pytest.mark.parametrize("profiles", ["identical", "proportional"])
def test_profiles_that_vary_only_by_rounding_get_unit_random_axes(profiles):
    """Float rounding is not variation: it must not be scaled up to unit variance.

    Proportional count profiles normalise to the same log profile up to rounding (~1e-7);
    scaling those differences to unit variance gave axes of ~1e5 and NaN fp16 embeddings.
    """
    rng = np.random.default_rng(0)
    base = rng.poisson(20, size=(1, 30)).astype(np.float32) + 1
    scale = np.ones((64, 1)) if profiles == "identical" else rng.integers(1, 50, size=(64, 1))
    stats = _fit((base * scale).astype(np.float32))
    _assert_finite_statistics(stats)
    assert np.abs(stats.principal_axes).max() < 10  # N(0, 1) entries, not ~1e5
    query = torch.from_numpy(rng.poisson(20, size=(8, 30)).astype(np.float32))
    module = _module(stats)
    for dtype in AUTOCAST.values():
        outputs = _module_outputs(module, query, dtype)
        assert all(torch.isfinite(value).all() for value in outputs.values()), dtype


extreme_counts = st.sampled_from([0.0, 0.0, 0.0, 1.0, 2.0, 7.0, 1e3, 1e7, np.nan])


@settings(max_examples=40, deadline=None)
@given(
    matrix=arrays(
        np.float32, st.tuples(st.integers(2, 10), st.integers(2, 8)), elements=extreme_counts
    ),
    precision=st.sampled_from(PRECISIONS),
)
def test_extreme_count_matrices_give_finite_statistics_loss_and_outputs(matrix, precision):
    matrix[0] = np.nan_to_num(matrix[0])  # every gene observed at least once
    stats = _fit(matrix)
    _assert_finite_statistics(stats)
    outputs = _module_outputs(_module(stats), torch.from_numpy(matrix), AUTOCAST[precision])
    for name, value in outputs.items():
        assert torch.isfinite(value).all(), name


@settings(max_examples=25, deadline=None)
@given(
    matrix=arrays(
        np.float32,
        st.tuples(st.integers(2, 10), st.integers(2, 8)),
        elements=st.one_of(st.sampled_from([0.0, 3.0, np.nan]), st.floats(-30, 30, width=32)),
    ),
    precision=st.sampled_from(PRECISIONS),
)
def test_extreme_log_matrices_give_finite_statistics_loss_and_outputs(matrix, precision):
    matrix[0] = np.nan_to_num(matrix[0])
    stats = _fit(matrix, is_counts=False)
    _assert_finite_statistics(stats)
    module = _module(stats, is_counts=False)
    outputs = _module_outputs(module, torch.from_numpy(matrix), AUTOCAST[precision])
    for name, value in outputs.items():
        assert torch.isfinite(value).all(), name


# ---------------------------------------------------------------- trained models


def _extreme_counts(case: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    counts = rng.poisson(5, size=(48, 16)).astype(np.float32)
    if case == "mixed":
        counts[:, 0] = 0  # an all-zero gene
        counts[:, 1] = 7  # a constant gene
        counts[:8, 2] = 1e7  # huge counts
        counts[10] = 0
        counts[10, 3] = 1e7  # one non-zero gene, huge
        counts[11] = 0
        counts[11, 4] = 1  # one non-zero gene, a single count
    elif case == "all_1e7":
        counts[:] = 1e7
    elif case == "proportional":
        counts = counts[:1] * rng.integers(1, 50, size=(48, 1)).astype(np.float32)
    elif case == "all_zero":
        counts[:] = 0
    return counts


def _adata(matrix: np.ndarray) -> ad.AnnData:
    return ad.AnnData(
        matrix,
        obs=pd.DataFrame(index=[f"cell_{i}" for i in range(matrix.shape[0])]),
        var=pd.DataFrame(index=[f"gene_{j}" for j in range(matrix.shape[1])]),
    )


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", ["mixed", "all_1e7", "proportional", "all_zero"])
def test_training_and_getters_stay_finite_on_extreme_counts(case, precision):
    adata = _adata(_extreme_counts(case))
    GexBERT.setup_anndata(adata)
    model = GexBERT(adata, **TINY_MODEL, seed=0)
    model.train(max_epochs=2, batch_size=16, enable_progress_bar=False, precision=precision)
    loss = model.history["train_loss"].to_numpy(dtype=float)
    assert np.isfinite(loss).all()
    assert all(torch.isfinite(buffer).all() for buffer in model.module.buffers())
    # a query far from the training data: huge counts, single-gene samples, zeros
    query = _adata(np.where(np.eye(12, 16) > 0, 1e7, _extreme_counts("mixed")[:12]))
    for data in (adata, query):
        assert np.isfinite(model.get_latent_representation(data, precision=precision)).all()
        imputed = model.impute_expression(
            data, keep_observed=False, n_samples=2, precision=precision
        )
        assert np.isfinite(imputed.values).all() and np.isfinite(imputed.spread).all()
