"""Select and reorder the columns of a dense, sparse or backed matrix, one block of rows at a time.

No function here builds a dense ``samples × genes`` block of a sparse or backed matrix: a
sparse result stores the input's entries of the kept columns plus, for each column taken
from nowhere (position ``-1``), one explicit entry per row holding ``fill``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata.abc import CSCDataset, CSRDataset

#: Rows read at once are chosen so that a block of the result holds about this many entries.
BLOCK_ENTRIES = 4_000_000


def is_sparse_like(matrix: Any) -> bool:
    """Whether ``matrix`` is a scipy sparse matrix or a backed sparse AnnData dataset."""
    return sp.issparse(matrix) or isinstance(matrix, CSRDataset | CSCDataset)


def result_dtype(matrix: Any) -> np.dtype:
    """Return the dtype of selected columns: ``bool`` for masks, else an exact float type.

    float32 and float64 are kept; integers and smaller floats are promoted as numpy
    promotes them with float32 (int8/int16 → float32, int32/int64 → float64), so that every
    value is kept exactly and NaN can be stored.
    """
    dtype = np.dtype(matrix.dtype)
    return dtype if dtype == np.bool_ else np.result_type(dtype, np.float32)


def take_columns(matrix: Any, positions: np.ndarray, fill: Any, block_entries: int = BLOCK_ENTRIES):
    """Return the columns of ``matrix`` at ``positions``, ``-1`` giving a column of ``fill``.

    Parameters
    ----------
    matrix
        A numpy array, a scipy sparse matrix (any format) or a backed AnnData's matrix.
    positions
        For each column of the result, the column of ``matrix`` it holds, or ``-1``.
    fill
        Value of the ``-1`` columns (NaN for values, ``True`` for missing masks), or
        ``None`` to store nothing there (implicit zeros; sparse input only).
    block_entries
        Rows are read in blocks of about this many result entries (bounds the temporaries).

    Returns
    -------
    A :class:`numpy.ndarray` for dense input; for sparse or backed sparse input, a
    :class:`scipy.sparse.csr_matrix` with sorted indices holding ``nnz`` of the kept
    columns plus ``n_rows × n_absent`` explicit ``fill`` entries: never a dense block.
    The dtype is :func:`result_dtype`'s; kept values are bit-identical to the input's.
    """
    positions = np.asarray(positions, dtype=np.int64)
    dtype = result_dtype(matrix)
    step = max(1, block_entries // max(len(positions), 1))
    if not is_sparse_like(matrix):
        return _take_dense(matrix, positions, fill, dtype, step)
    if sp.issparse(matrix) and matrix.format != "csr":
        matrix = matrix.tocsr()  # O(nnz): row blocks of a CSC matrix would each scan it all
    return _take_sparse(matrix, positions, fill, dtype, step)


def _row_blocks(matrix: Any, step: int) -> Iterator[tuple[slice, Any]]:
    """Yield ``(rows, block)`` for consecutive blocks of ``step`` rows."""
    for start in range(0, matrix.shape[0], step):
        rows = slice(start, min(start + step, matrix.shape[0]))
        yield rows, matrix[rows]


def _take_dense(
    matrix: Any, positions: np.ndarray, fill: Any, dtype: np.dtype, step: int
) -> np.ndarray:
    """Dense result, filled block by block (a backed matrix is never read whole)."""
    present = positions >= 0
    taken = np.empty((matrix.shape[0], len(positions)), dtype=dtype)
    columns = positions[present]
    for rows, block in _row_blocks(matrix, step):
        taken[rows, present] = np.asarray(block)[:, columns]
    taken[:, ~present] = fill
    return taken


def _take_sparse(
    matrix: Any, positions: np.ndarray, fill: Any, dtype: np.dtype, step: int
) -> sp.csr_matrix:
    """CSR result, assembled in arrays sized once (two passes over the row blocks)."""
    n_rows, n_cols = matrix.shape[0], len(positions)
    new_column = np.full(matrix.shape[1], -1, dtype=np.int64)
    new_column[positions[positions >= 0]] = np.flatnonzero(positions >= 0)
    absent = np.flatnonzero(positions < 0) if fill is not None else np.array([], dtype=np.int64)
    n_kept = sum(
        int(np.count_nonzero(new_column[sp.csr_matrix(b).indices] >= 0))
        for _, b in _row_blocks(matrix, step)
    )
    n_entries = n_kept + n_rows * len(absent)
    index_dtype = np.int32 if max(n_entries, n_cols) < np.iinfo(np.int32).max else np.int64
    data = np.empty(n_entries, dtype=dtype)
    indices = np.empty(n_entries, dtype=index_dtype)
    indptr = np.zeros(n_rows + 1, dtype=index_dtype)
    offset = 0
    for rows, block in _row_blocks(matrix, step):
        piece = _remap_block(sp.csr_matrix(block), new_column, absent, fill, dtype, n_cols)
        data[offset : offset + piece.nnz] = piece.data
        indices[offset : offset + piece.nnz] = piece.indices
        indptr[rows.start + 1 : rows.stop + 1] = offset + piece.indptr[1:]
        offset += piece.nnz
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))


def _remap_block(
    block: sp.csr_matrix,
    new_column: np.ndarray,
    absent: np.ndarray,
    fill: Any,
    dtype: np.dtype,
    n_cols: int,
) -> sp.csr_matrix:
    """One block's result: its kept entries at their new columns, then ``fill`` at ``absent``."""
    columns = new_column[block.indices]
    keep = columns >= 0
    kept_before = np.concatenate([[0], np.cumsum(keep)])[block.indptr]  # kept entries per row start
    kept_counts = np.diff(kept_before)
    n_rows, n_absent = block.shape[0], len(absent)
    row_shift = n_absent * np.arange(n_rows)
    data = np.empty(kept_before[-1] + n_rows * n_absent, dtype=dtype)
    indices = np.empty(len(data), dtype=np.int64)
    slots = np.arange(kept_before[-1]) + np.repeat(row_shift, kept_counts)
    data[slots] = block.data[keep]
    indices[slots] = columns[keep]
    if n_absent:
        absent_slots = ((kept_before[1:] + row_shift)[:, None] + np.arange(n_absent)).ravel()
        data[absent_slots] = fill
        indices[absent_slots] = np.tile(absent, n_rows)
    piece = sp.csr_matrix(
        (data, indices, kept_before + np.concatenate([row_shift, [n_absent * n_rows]])),
        shape=(n_rows, n_cols),
    )
    piece.sort_indices()
    return piece
