"""Shared fixtures: tiny synthetic AnnData and tiny model settings."""

from __future__ import annotations

import logging
import os

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from helpers import (
    TINY_MODEL,
    TINY_TRAIN,
    attend_to_programme_genes,
    make_counts_adata,
    make_programme_adata,
)

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

# `precision="auto"` must resolve the same on every CPU, so that the verdict of the suite
# does not depend on the machine: fp32 unless the run asks for bf16 (`GEXBERT_CPU_BF16=1
# make test` runs the whole suite with bf16 training). Notebook kernels inherit it.
os.environ.setdefault("GEXBERT_CPU_BF16", "0")


@pytest.fixture
def counts_adata() -> ad.AnnData:
    return make_counts_adata()


@pytest.fixture
def log_adata() -> ad.AnnData:
    adata = make_counts_adata()
    adata.X = np.log1p(adata.X / adata.X.sum(1, keepdims=True) * 1e4)
    return adata


@pytest.fixture(params=["dense", "csr"])
def any_format_adata(request) -> ad.AnnData:
    adata = make_counts_adata()
    if request.param == "csr":
        adata.X = sp.csr_matrix(adata.X)
    return adata


@pytest.fixture(scope="module")
def trained_model():
    """A tiny model trained for two epochs on counts with 10% NaN (shared, do not mutate)."""
    import gexbert_sc

    adata = make_counts_adata(seed=1)
    adata.X[np.random.default_rng(1).random(adata.shape) < 0.1] = np.nan
    gexbert_sc.GexBERT.setup_anndata(adata)
    model = gexbert_sc.GexBERT(adata, **TINY_MODEL)
    model.train(**TINY_TRAIN)
    return model


@pytest.fixture(scope="session")
def programme_model():
    """A one-block model on programme data whose [CLS] attends to high programme genes.

    Shared, do not mutate (copy its AnnData before writing to it).
    """
    import gexbert_sc

    adata = make_programme_adata()
    gexbert_sc.GexBERT.setup_anndata(adata)
    model = gexbert_sc.GexBERT(adata, **{**TINY_MODEL, "n_inference_context": 48}, seed=0)
    model.train(**{**TINY_TRAIN, "max_epochs": 1})
    attend_to_programme_genes(model, np.flatnonzero(adata.var["programme"] != "none"))
    return model
