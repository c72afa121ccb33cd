"""Bring a query measured by another technology onto the reference's scale, gene by gene.

A targeted panel (FISH intensities, MERFISH counts over a few hundred genes) holds values on
its own scale: a model trained on log-normalised scRNA-seq would read them as nonsense.
Both methods here map each shared gene's query values onto the distribution of that gene's
reference values and keep the order of the samples within the gene:

- ``"quantile"``: a sample at the ``u``-th quantile of the query's values of a gene gets the
  ``u``-th quantile of the reference's values of that gene (any monotone difference of scale
  is undone; the query's distribution becomes the reference's).
- ``"standardise"``: the query's values of a gene are z-scored and given the reference's
  mean and standard deviation (an affine difference of scale is undone; the shape of the
  query's distribution is kept).

Both assume that the query and the reference sample the same kinds of cells in similar
proportions (a gene's mean, spread and quantiles depend on them).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
from scipy.stats import rankdata

from gexbert_sc.data._matrix import to_dense

ScaleMatching = Literal["quantile", "standardise"]

#: Reference quantiles stored per gene for quantile matching (linear interpolation between).
N_REFERENCE_QUANTILES = 1_001
#: Most reference samples read (a seeded subsample beyond): enough for 1,001 quantiles.
MAX_REFERENCE_SAMPLES = 20_000


def check_scale_matching(match_scale: Any) -> None:
    """Raise a :class:`ValueError` unless ``match_scale`` is ``None`` or a known method."""
    allowed = get_args(ScaleMatching)
    if match_scale is not None and match_scale not in allowed:
        msg = f"`match_scale` must be None or one of {allowed}, got {match_scale!r}."
        raise ValueError(msg)


def dense_columns(matrix: Any, columns: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Return ``matrix[rows][:, columns]`` as a dense float64 array (NaN kept).

    Parameters
    ----------
    matrix
        Dense, sparse or backed matrix.
    columns
        Column positions.
    rows
        Row positions (default: all rows).
    """
    block = matrix if rows is None else matrix[rows]
    return to_dense(block[:, columns]).astype(np.float64)


def match_scale_values(
    query: np.ndarray, reference: np.ndarray, method: ScaleMatching, genes: list[str]
) -> np.ndarray:
    """Map each column of ``query`` onto the distribution of the same column of ``reference``.

    Parameters
    ----------
    query
        ``(n_query, n_genes)`` values; NaN (missing) stays NaN and is not counted.
    reference
        ``(n_reference, n_genes)`` values of the same genes, in the same order; NaN ignored.
    method
        ``"quantile"`` or ``"standardise"`` (see the module docstring). Ties in the query
        (e.g. a block of zeros) share their mid-rank and so one reference quantile.
    genes
        The genes' names, for error messages.

    Returns
    -------
    A new float64 array of ``query``'s shape.

    Raises
    ------
    ValueError
        If the query holds infinite values, or a gene has no observed value in the
        reference.
    """
    check_scale_matching(method)
    infinite = np.flatnonzero(np.isinf(query).any(axis=0))
    if infinite.size:
        names = ", ".join(genes[i] for i in infinite[:5])
        msg = (
            f"The query holds infinite values in {infinite.size} shared genes (e.g. {names}); "
            "expected finite values, with NaN marking missing ones."
        )
        raise ValueError(msg)
    observed = ~np.isnan(reference)
    empty = np.flatnonzero(~observed.any(axis=0))
    if empty.size:
        names = ", ".join(genes[i] for i in empty[:5])
        msg = (
            f"{empty.size} shared genes have no observed value in the scale reference "
            f"(e.g. {names}); their query values cannot be matched."
        )
        raise ValueError(msg)
    matched = np.full(query.shape, np.nan)
    if method == "standardise":
        ref_mean, ref_sd = np.nanmean(reference, axis=0), np.nanstd(reference, axis=0)
    else:
        levels = np.linspace(0.0, 1.0, N_REFERENCE_QUANTILES)
        ref_quantiles = np.nanquantile(reference, levels, axis=0)
    for j in range(query.shape[1]):
        seen = ~np.isnan(query[:, j])
        values = query[seen, j]
        if values.size == 0:
            continue
        if method == "standardise":
            sd = values.std()
            z = (values - values.mean()) / sd if sd > 0 else np.zeros_like(values)
            matched[seen, j] = ref_mean[j] + z * ref_sd[j]
        else:
            position = (rankdata(values) - 0.5) / values.size
            matched[seen, j] = np.interp(position, levels, ref_quantiles[:, j])
    return matched
