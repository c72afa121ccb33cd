"""Access the registered expression matrix of an AnnData and sample its stored values."""

from __future__ import annotations

from typing import Any, NamedTuple

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


def to_dense(values: Any) -> np.ndarray:
    """Return a sparse matrix or an array-like as a dense numpy array."""
    return values.toarray() if sp.issparse(values) else np.asarray(values)


class ValueScan(NamedTuple):
    """What a full pass over a matrix's stored values found (NaN entries are skipped)."""

    #: Number of ``+inf`` or ``-inf`` entries.
    n_infinite: int
    #: ``(row, column)`` of the first infinite entry, or ``None``.
    first_infinite: tuple[int, int] | None
    #: Number of finite entries (stored entries, for a sparse matrix).
    n_finite: int
    #: Smallest and largest finite value (``nan`` without finite values).
    minimum: float
    maximum: float
    #: A finite value that is not an integer, or ``None`` if every finite value is one.
    first_fraction: float | None
    #: Rows without any observed value (every entry NaN).
    empty_rows: np.ndarray


def scan_values(matrix: Any, max_block_values: int = 1_000_000) -> ValueScan:
    """Scan every stored value of a dense, sparse or backed matrix, one block of rows at a time.

    Parameters
    ----------
    matrix
        A numpy array, a scipy sparse matrix, or a backed AnnData's matrix.
    max_block_values
        Rows are read in blocks of about this many entries, so memory stays bounded.

    Returns
    -------
    Counts and extremes of the values (implicit zeros of a sparse matrix are not counted).
    """
    n_rows, n_cols = matrix.shape
    step = max(1, max_block_values // max(n_cols, 1))
    n_infinite, n_finite = 0, 0
    first_infinite: tuple[int, int] | None = None
    minimum, maximum = np.inf, -np.inf
    first_fraction: float | None = None
    empty_rows: list[np.ndarray] = []
    for start in range(0, n_rows, step):
        block = matrix[start : start + step]
        values = np.asarray(block.data if sp.issparse(block) else block, dtype=np.float64).ravel()
        infinite = np.isinf(values)
        if infinite.any() and first_infinite is None:
            row, col = _first_infinite_entry(block)
            first_infinite = (start + row, col)
        n_infinite += int(infinite.sum())
        empty_rows.append(start + np.flatnonzero(_observed_per_row(block, n_cols) == 0))
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            continue
        n_finite += finite.size
        minimum, maximum = min(minimum, float(finite.min())), max(maximum, float(finite.max()))
        if first_fraction is None:
            fractional = finite[finite != np.round(finite)]
            first_fraction = float(fractional[0]) if fractional.size else None
    if n_finite == 0:
        minimum = maximum = np.nan
    return ValueScan(
        n_infinite,
        first_infinite,
        n_finite,
        minimum,
        maximum,
        first_fraction,
        np.concatenate(empty_rows) if empty_rows else np.array([], dtype=int),
    )


def _observed_per_row(block: Any, n_cols: int) -> np.ndarray:
    """Return how many entries of each row of a block are observed (not NaN)."""
    if not sp.issparse(block):
        return (~np.isnan(np.asarray(block, dtype=np.float64))).sum(axis=1)
    csr = sp.csr_matrix(block)
    stored_nan = sp.csr_matrix((np.isnan(csr.data), csr.indices, csr.indptr), shape=csr.shape)
    return n_cols - np.asarray(stored_nan.sum(axis=1)).ravel()


def _first_infinite_entry(block: Any) -> tuple[int, int]:
    """Return ``(row, column)`` of the first infinite entry of a block holding one."""
    if sp.issparse(block):
        coo = block.tocoo()
        where = int(np.flatnonzero(np.isinf(coo.data))[0])
        return int(coo.row[where]), int(coo.col[where])
    row, col = np.argwhere(np.isinf(np.asarray(block, dtype=np.float64)))[0]
    return int(row), int(col)
