"""Read rows of an AnnData matrix (dense, sparse or backed) a block at a time."""

from __future__ import annotations

from collections.abc import Iterator
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


def dense_rows(matrix: Any, rows: np.ndarray | slice) -> np.ndarray:
    """Return ``matrix[rows]`` as a dense float32 array (only these rows are densified)."""
    block = matrix[rows]
    if sp.issparse(block):
        block = block.toarray()
    return np.asarray(block, dtype=np.float32)


def iter_row_blocks(
    matrix: Any, rows: np.ndarray | None = None, block_size: int = 1024
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(row_indices, dense_block)`` over ``rows`` (all rows by default), in order.

    Parameters
    ----------
    matrix
        Dense array, scipy sparse matrix, h5py dataset or AnnData backed sparse dataset.
    rows
        Sorted row indices to read; ``None`` reads every row.
    block_size
        Rows densified at once; memory is ``block_size × n_vars`` floats.
    """
    n_rows = matrix.shape[0]
    rows = np.arange(n_rows) if rows is None else np.asarray(rows)
    for start in range(0, len(rows), block_size):
        idx = rows[start : start + block_size]
        yield idx, dense_rows(matrix, idx)


def sample_values(matrix: Any, max_rows: int = 500, seed: int = 0) -> np.ndarray:
    """Return the stored values of up to ``max_rows`` random rows as a flat float array."""
    n_rows = matrix.shape[0]
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n_rows, size=min(n_rows, max_rows), replace=False))
    block = matrix[rows]
    if sp.issparse(block):
        return np.asarray(block.data, dtype=np.float64)
    return np.asarray(block, dtype=np.float64).ravel()
