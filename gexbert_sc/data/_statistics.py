"""Per-gene statistics fitted once on the training data and stored with the model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.linalg.blas import dsyrk

from gexbert_sc.data._normalization import log_normalise, size_factors_from_sums

logger = logging.getLogger(__name__)

_GENE_CHUNK = 512
# rows of the fitted subsample read at once (bounds the reader's temporaries)
_ROW_CHUNK = 1_024
# cells used for the principal axes (an initialisation: more cells cost n² memory, n² k time)
_AXES_CELLS = 2_000
# variation below this share of the log values' energy (sum of squares) is float rounding:
# identical or proportional profiles must not get axes scaled up to unit variance of noise
_ROUNDING_SHARE = 1e-10


@dataclass
class ExpressionStatistics:
    """What the model needs to turn raw values into tokens, all of fixed shape.

    Attributes
    ----------
    gene_share
        ``(G,)`` expected library share per gene (uniform for log-scale input).
    bin_edges
        ``(G, n_levels - 2)`` per-gene quantile edges of the non-zero log-scale values.
    gene_mean
        ``(G,)`` mean log-scale value over observed entries (zeros included).
    principal_axes
        ``(G, n_axes)`` leading principal axes of the centred log-scale profiles (missing
        entries at their gene's mean), scaled by ``sqrt(G)`` and by one over the root mean
        variance of the kept components, so that projections have unit average variance.
    gene_min, gene_max
        ``(G,)`` smallest and largest observed log-scale value of each gene: the range a
        restoration of the gene is bounded to.
    max_size_factor
        Largest size factor of the fitted rows (1 for log-scale input): with ``gene_max``,
        it bounds a restored count.
    """

    gene_share: np.ndarray
    bin_edges: np.ndarray
    gene_mean: np.ndarray
    principal_axes: np.ndarray
    gene_min: np.ndarray
    gene_max: np.ndarray
    max_size_factor: float


class GenesNeverObservedError(ValueError):
    """Some genes have no observed value in the rows the statistics are fitted on."""


def sample_rows(
    n_obs: int, max_cells: int, seed: int, exclude: np.ndarray | None = None
) -> np.ndarray:
    """Return the sorted rows the statistics are fitted on: all of them, or a seeded sample.

    Parameters
    ----------
    n_obs
        Number of rows of the data.
    max_cells
        Most rows kept; with no more eligible rows every one is kept, in order.
    seed
        Seed of the sample (the same seed and sizes give the same rows on every run).
    exclude
        Rows never kept (default: none).

    Returns
    -------
    Increasing row positions.
    """
    eligible = np.arange(n_obs) if exclude is None else np.setdiff1d(np.arange(n_obs), exclude)
    if len(eligible) <= max_cells:
        return eligible
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(eligible, size=max_cells, replace=False))


def _subsample(matrix: Any, max_cells: int, seed: int, exclude: np.ndarray | None) -> Any:
    """Read the rows of :func:`sample_rows`, ``_ROW_CHUNK`` at a time (never a whole file).

    Sparse stays sparse, in CSC for column access.
    """
    rows = sample_rows(matrix.shape[0], max_cells, seed, exclude)
    blocks = [matrix[rows[start : start + _ROW_CHUNK]] for start in range(0, len(rows), _ROW_CHUNK)]
    if sp.issparse(blocks[0]):
        return sp.vstack(blocks, format="csr").tocsc()
    return np.concatenate([np.asarray(block) for block in blocks])


def _columns(matrix: Any, cols: slice) -> np.ndarray:
    block = matrix[:, cols]
    return np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float32)


def _column_blocks(values: Any, missing: Any | None):
    """Yield ``(cols, values_block, observed_block)`` over gene chunks."""
    n_genes = values.shape[1]
    for start in range(0, n_genes, _GENE_CHUNK):
        cols = slice(start, min(start + _GENE_CHUNK, n_genes))
        block = _columns(values, cols)
        observed = ~np.isnan(block)
        if missing is not None:
            observed &= _columns(missing, cols) < 0.5
        yield cols, block, observed


def _fit_library_model(values: Any, missing: Any | None) -> tuple[np.ndarray, torch.Tensor]:
    """Gene library shares :math:`p_g` and the fitted cells' size factors, chunk by chunk."""
    n_cells, n_genes = values.shape
    library = np.zeros(n_cells)
    for _, block, observed in _column_blocks(values, missing):
        library += np.where(observed, block, 0.0).sum(axis=1)
    keep = library > 0
    share = np.zeros(n_genes)
    for cols, block, observed in _column_blocks(values, missing):
        counts = np.where(observed, block, 0.0)
        share[cols] = (counts[keep] / library[keep, None]).sum(axis=0)
    # all-zero training counts carry no library shares: uniform ones, as for log-scale input
    share = share / share.sum() if share.sum() > 0 else np.full(n_genes, 1.0 / n_genes)
    observed_share = np.zeros(n_cells)
    for cols, _, observed in _column_blocks(values, missing):
        observed_share += observed @ share[cols]
    factors = size_factors_from_sums(torch.from_numpy(library), torch.from_numpy(observed_share))
    return share, factors.float()


def _log_blocks(values: Any, missing: Any | None, factors: torch.Tensor, is_counts: bool):
    """Yield ``(cols, y)``: log-scale values over gene chunks, NaN where not observed."""
    for cols, block, observed in _column_blocks(values, missing):
        y = np.where(observed, block, 0.0)
        if is_counts:
            y = log_normalise(torch.from_numpy(y), factors).numpy()
        y[~observed] = np.nan
        yield cols, y


def _gram_matrix(
    values: Any, missing: Any | None, factors, is_counts, gene_mean
) -> tuple[np.ndarray, float]:
    """``Y Yᵀ`` of the centred log profiles (missing = 0), accumulated over gene chunks.

    Only the upper triangle is updated in place (BLAS ``syrk``), so memory stays at one
    ``(n, n)`` matrix (two while it is mirrored). Also returns the sum of squares of the
    observed (uncentred) log values, the scale of their rounding errors.
    """
    n_cells = values.shape[0]
    gram = np.zeros((n_cells, n_cells), order="F")
    energy = 0.0
    for cols, y in _log_blocks(values, missing, factors, is_counts):
        centred = np.nan_to_num(y - gene_mean[cols])
        gram = dsyrk(1.0, centred, beta=1.0, c=gram, overwrite_c=True)
        energy += float(np.nansum(np.square(y, dtype=np.float64)))
    # the lower triangle is still zero: add the upper one's mirror; the symmetric result's
    # transpose is the C-ordered Gram matrix (a view, not a copy)
    gram += np.triu(gram, 1).T
    return gram.T, energy


def _leading_eigenpairs(
    gram: np.ndarray, k: int, rng: np.random.Generator, n_iter: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` eigenpairs of a positive semi-definite matrix by randomised subspace iteration.

    Cost ``O(n² (k + 16) n_iter)``, against ``O(n³)`` for a full decomposition.
    """
    n = gram.shape[0]
    basis = np.linalg.qr(gram @ rng.standard_normal((n, min(n, k + 16))))[0]
    for _ in range(n_iter):
        basis = np.linalg.qr(gram @ basis)[0]
    eigenvalues, rotation = np.linalg.eigh(basis.T @ gram @ basis)
    top = np.argsort(eigenvalues)[::-1][:k]
    return eigenvalues[top], basis @ rotation[:, top]


def _principal_axes(
    values: Any,
    missing: Any | None,
    factors: torch.Tensor,
    is_counts: bool,
    gene_mean: np.ndarray,
    n_axes: int,
    seed: int,
) -> np.ndarray:
    """Leading principal axes of the centred log profiles, from the cells' Gram matrix.

    At most ``_AXES_CELLS`` random cells are used. Their ``(n, n)`` Gram matrix is accumulated
    over gene chunks (memory ``n²``, never ``n × G``); its leading eigenvectors ``U`` with
    eigenvalues ``s²`` give the axes ``V = Yᵀ U / s`` in a second pass. Axes beyond the rank
    of the data are random, and so are all of them when the data do not vary beyond float
    rounding (identical or proportional profiles).
    """
    rng = np.random.default_rng(seed)
    if values.shape[0] > _AXES_CELLS:
        rows = np.sort(rng.choice(values.shape[0], size=_AXES_CELLS, replace=False))
        values, factors = values[rows], factors[rows]
        missing = None if missing is None else missing[rows]
    n_cells, n_genes = values.shape
    axes = rng.standard_normal((n_genes, n_axes)) / np.sqrt(n_genes)
    gram, energy = _gram_matrix(values, missing, factors, is_counts, gene_mean)
    eigenvalues, eigenvectors = _leading_eigenpairs(gram, min(n_axes, n_cells), rng)
    floor = max(1e-8 * eigenvalues[0], _ROUNDING_SHARE * energy, 1e-30)
    n_kept = int((eigenvalues > floor).sum())
    if n_kept == 0:
        return axes * np.sqrt(n_genes)
    eigenvalues = eigenvalues[:n_kept]
    eigenvectors = eigenvectors[:, :n_kept] / np.sqrt(eigenvalues)
    for cols, y in _log_blocks(values, missing, factors, is_counts):
        axes[cols, :n_kept] = np.nan_to_num(y - gene_mean[cols]).T @ eigenvectors
    # a fixed sign per axis: its largest loading is positive
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(n_axes)])
    variance = eigenvalues.mean() / max(n_cells - 1, 1)
    return axes * signs * np.sqrt(n_genes / variance)


def _quantile_edges(values: np.ndarray, n_edges: int) -> np.ndarray:
    """Per-column quantiles of the non-NaN entries of ``values`` ``(n, G)`` → ``(G, n_edges)``."""
    ordered = np.sort(values, axis=0)  # NaN sorts last
    n_valid = (~np.isnan(values)).sum(axis=0)
    quantiles = np.arange(1, n_edges + 1) / (n_edges + 1)
    positions = np.round(quantiles[:, None] * np.maximum(n_valid - 1, 0)).astype(int)
    edges = np.take_along_axis(ordered, positions, axis=0).T
    return np.where(np.isnan(edges), 0.0, edges)


def fit_expression_statistics(
    matrix: Any,
    missing: Any | None,
    is_counts: bool,
    n_levels: int,
    var_names: np.ndarray,
    n_axes: int,
    max_cells: int = 5_000,
    seed: int = 0,
    exclude_rows: np.ndarray | None = None,
) -> ExpressionStatistics:
    """Fit library shares, bin edges, gene means and principal axes on (a subsample of) the data.

    At most ``max_cells`` rows are read: all of them, in order, when the data have no more
    rows, else a sample drawn with ``seed`` (the same rows on every run). They are read
    ``1024`` rows at a time, so a backed AnnData (``read_h5ad(..., backed="r")``) is never
    read whole; sparse input stays sparse and is densified ``512`` genes at a time, so
    memory is bounded by the subsample (its stored entries) plus
    ``max_cells × max(512, 2000)`` floats, whatever the size of the file.

    Parameters
    ----------
    matrix
        Expression values ``(n_obs, G)``; NaN marks missing entries.
    missing
        Optional boolean mask ``(n_obs, G)``, ``True`` = missing.
    is_counts
        Whether values are counts (normalised and log1p'd) or already log-scale.
    n_levels
        Number of expression levels including the reserved zero level.
    var_names
        Gene names, used in error messages.
    n_axes
        Number of principal axes (the model width).
    max_cells
        Most rows read for fitting (default 5000).
    seed
        Seed of the row subsample.
    exclude_rows
        Rows never read (e.g. the validation samples); default: none.

    Returns
    -------
    The fitted :class:`ExpressionStatistics`.

    Raises
    ------
    ValueError
        If some genes are never observed in the fitted rows.
    """
    values = _subsample(matrix, max_cells, seed, exclude_rows)
    missing = None if missing is None else _subsample(missing, max_cells, seed, exclude_rows)
    n_cells, n_genes = values.shape
    gene_share = np.full(n_genes, 1.0 / n_genes)
    factors = torch.ones(n_cells)
    if is_counts:
        gene_share, factors = _fit_library_model(values, missing)
    gene_mean, gene_min, gene_max = np.zeros(n_genes), np.zeros(n_genes), np.zeros(n_genes)
    bin_edges = np.zeros((n_genes, n_levels - 2))
    never = []
    for cols, y in _log_blocks(values, missing, factors, is_counts):
        n_observed = (~np.isnan(y)).sum(axis=0)
        never.extend(np.flatnonzero(n_observed == 0) + cols.start)
        gene_mean[cols] = np.nansum(y, axis=0) / np.maximum(n_observed, 1)
        seen = n_observed > 0  # a gene never observed is refused below
        gene_min[cols][seen] = np.nanmin(y[:, seen], axis=0)
        gene_max[cols][seen] = np.nanmax(y[:, seen], axis=0)
        y[y == 0] = np.nan
        bin_edges[cols] = _quantile_edges(y, n_levels - 2)
    if never:
        names = ", ".join(map(str, np.asarray(var_names)[never[:5]]))
        msg = (
            f"{len(never)} of {n_genes} genes have no observed value in the training data "
            f"(e.g. {names}); GexBERT cannot learn them. Before `setup_anndata`, keep only "
            "the genes with at least one value that is not NaN (nor flagged in "
            "`missing_layer`) in the layer you register; to read a panel with a model "
            "pretrained on more genes, load that model with the aligned panel instead."
        )
        raise GenesNeverObservedError(msg)
    axes = _principal_axes(values, missing, factors, is_counts, gene_mean, n_axes, seed)
    logger.debug("Fitted expression statistics on %d rows × %d genes.", n_cells, n_genes)
    return ExpressionStatistics(
        gene_share=gene_share.astype(np.float32),
        bin_edges=bin_edges.astype(np.float32),
        gene_mean=gene_mean.astype(np.float32),
        principal_axes=axes.astype(np.float32),
        gene_min=gene_min.astype(np.float32),
        gene_max=gene_max.astype(np.float32),
        max_size_factor=float(factors.max()) if is_counts else 1.0,
    )
