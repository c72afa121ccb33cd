"""Reduced 10x PBMC 68k data shipped with scanpy."""

from __future__ import annotations

import functools
import logging

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from gexbert_sc._constants import OUTPUT_KEYS

from ._package_files import DataPackage, dataset_info

logger = logging.getLogger(__name__)

SCANPY = DataPackage(
    module="scanpy",
    distribution="scanpy",
    install="pip install 'scanpy>=1.11,<1.12'",
    license="BSD-3-Clause (scanpy)",
)
_FILE = "datasets/10x_pbmc68k_reduced.h5ad"


@functools.lru_cache(maxsize=1)
def _load() -> AnnData:
    import scanpy as sc

    full = sc.datasets.pbmc68k_reduced()
    raw = full.raw
    x = raw.X.toarray() if sp.issparse(raw.X) else np.asarray(raw.X)
    adata = AnnData(
        X=np.ascontiguousarray(x, dtype=np.float32),
        obs=full.obs.copy(),
        var=raw.var.copy(),
    )
    adata.var_names = raw.var_names.astype(str)
    adata.uns[OUTPUT_KEYS.DATASET_UNS] = dataset_info(
        "pbmc68k", SCANPY, [_FILE], "log1p-normalised", label_key="bulk_labels"
    )
    logger.info("Loaded pbmc68k: %d cells x %d genes", adata.n_obs, adata.n_vars)
    return adata


def pbmc68k() -> AnnData:
    """Load 700 PBMCs x 765 genes, log1p-normalised, from :func:`scanpy.datasets.pbmc68k_reduced`.

    ``X`` is the data set's ``raw`` matrix (library-size normalised, then ``log1p``) as a dense
    float32 array; there are no counts. ``obs`` is the original annotation, with the ten cell
    types in ``obs["bulk_labels"]``.

    Returns
    -------
    A new :class:`~anndata.AnnData` (700 x 765) on every call. ``uns["gexbert_dataset"]`` names
    the source, licence (BSD-3-Clause, scanpy) and value scale.

    Raises
    ------
    ModuleNotFoundError
        If scanpy is not installed.

    Examples
    --------
    >>> from gexbert_sc.datasets import pbmc68k
    >>> adata = pbmc68k()
    >>> adata.shape
    (700, 765)
    >>> adata.obs["bulk_labels"].nunique()
    10
    """
    SCANPY.directory()  # clear error when scanpy is missing, checked on every call
    return _load().copy()
