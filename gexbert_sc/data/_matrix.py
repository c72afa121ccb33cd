"""Access the registered expression matrix of an AnnData and sample its stored values."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp


def registered_values(manager: Any) -> tuple[Any, Any | None]:
    """Return the registered expression matrix and the registered missing mask (or ``None``).

    Parameters
    ----------
    manager
        The :class:`scvi.data.AnnDataManager` of a set-up AnnData.
    """
    from gexbert_sc._constants import REGISTRY_KEYS

    values = manager.get_from_registry(REGISTRY_KEYS.X_KEY)
    if REGISTRY_KEYS.MISSING_KEY not in manager.data_registry:
        return values, None
    return values, manager.get_from_registry(REGISTRY_KEYS.MISSING_KEY)


def sample_values(matrix: Any, max_rows: int = 500, seed: int = 0) -> np.ndarray:
    """Return the stored values of up to ``max_rows`` random rows as a flat float array."""
    n_rows = matrix.shape[0]
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n_rows, size=min(n_rows, max_rows), replace=False))
    block = matrix[rows]
    if sp.issparse(block):
        return np.asarray(block.data, dtype=np.float64)
    return np.asarray(block, dtype=np.float64).ravel()


def to_dense(values: Any) -> np.ndarray:
    """Return a sparse matrix or an array-like as a dense numpy array."""
    return values.toarray() if sp.issparse(values) else np.asarray(values)
