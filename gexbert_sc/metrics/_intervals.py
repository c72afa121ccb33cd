"""Scores of prediction intervals: coverage overall and per gene, width, reliability curves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gexbert_sc.data._validation import measured_matrix
from gexbert_sc.metrics._imputation import _check_fraction, _dense, _rng, mask_entries
from gexbert_sc.model.base._conformal import check_coverage
from gexbert_sc.utils import check_positive_integers

if TYPE_CHECKING:
    import numpy.typing as npt
    from anndata import AnnData

    from gexbert_sc.model import GexBERT

#: Nominal coverages of :func:`calibration_curve` by default.
CURVE_COVERAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def interval_coverage(
    truth: npt.ArrayLike,
    lower: npt.ArrayLike,
    upper: npt.ArrayLike,
    mask: npt.ArrayLike,
    *,
    per_gene: bool = False,
) -> float | npt.NDArray[np.float64]:
    """Share of the masked entries whose true value lies within ``[lower, upper]``.

    Parameters
    ----------
    truth
        ``(n_samples, n_genes)`` values before they were hidden.
    lower, upper
        Bounds of the same shape (``Imputation.lower`` / ``upper``, or the layers
        ``gexbert_imputed_lower`` / ``_upper``); infinite bounds are allowed.
    mask
        Boolean, same shape: the entries scored (those that were hidden).
    per_gene
        Return each gene's coverage instead (NaN for genes without masked entries).

    Returns
    -------
    The empirical coverage, or ``(n_genes,)`` of them.

    Examples
    --------
    >>> import numpy as np
    >>> from gexbert_sc.metrics import interval_coverage
    >>> truth = np.array([[0.0, 1.0], [2.0, 3.0]])
    >>> interval_coverage(truth, truth - 1, truth + 1, np.ones((2, 2), bool))
    1.0
    """
    truth, lower, upper, mask = _check_intervals(truth, lower, upper, mask)
    inside = (truth >= lower) & (truth <= upper) & mask
    if not per_gene:
        return float(inside.sum() / mask.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return inside.sum(axis=0) / np.where(mask.any(axis=0), mask.sum(axis=0), np.nan)


def interval_width(lower: npt.ArrayLike, upper: npt.ArrayLike, mask: npt.ArrayLike) -> float:
    """Mean width ``upper - lower`` over the masked entries (``inf`` if one is unbounded).

    Parameters
    ----------
    lower, upper
        Bounds, ``(n_samples, n_genes)``.
    mask
        Boolean, same shape: the entries scored.

    Returns
    -------
    The mean width.

    Examples
    --------
    >>> import numpy as np
    >>> from gexbert_sc.metrics import interval_width
    >>> interval_width(np.zeros((1, 2)), np.array([[1.0, 3.0]]), np.ones((1, 2), bool))
    2.0
    """
    lower, upper, mask = _check_intervals(None, lower, upper, mask)[1:]
    return float(np.mean((upper - lower)[mask]))


def worst_gene_coverage(
    truth: npt.ArrayLike,
    lower: npt.ArrayLike,
    upper: npt.ArrayLike,
    mask: npt.ArrayLike,
    *,
    share: float = 0.1,
    min_entries: int = 20,
) -> float:
    """Mean coverage of the worst-covered ``share`` of genes (the worst decile by default).

    Only genes with at least ``min_entries`` masked entries count: with fewer, a gene's
    coverage is mostly the noise of its few entries.

    Parameters
    ----------
    truth, lower, upper, mask
        As in :func:`interval_coverage`.
    share
        Share of the counted genes averaged, in (0, 1].
    min_entries
        Masked entries a gene needs to be counted.

    Returns
    -------
    The mean coverage of those genes (NaN if no gene has ``min_entries``).

    Examples
    --------
    >>> import numpy as np
    >>> from gexbert_sc.metrics import worst_gene_coverage
    >>> truth = np.zeros((30, 10))
    >>> upper = np.zeros((30, 10))
    >>> upper[:, 0] = -1  # gene 0 is never covered
    >>> worst_gene_coverage(truth, truth, upper, np.ones((30, 10), bool))
    0.0
    """
    _check_fraction(share, "share", closed_right=True)
    coverage = interval_coverage(truth, lower, upper, mask, per_gene=True)
    counted = np.sort(coverage[np.asarray(mask).sum(axis=0) >= min_entries])
    if counted.size == 0:
        return float("nan")
    return float(np.mean(counted[: max(1, int(round(share * counted.size)))]))


def calibration_curve(
    model: GexBERT,
    adata: AnnData,
    *,
    rates: Sequence[float] = (0.1, 0.5, 0.9),
    panel_sizes: Sequence[int] = (),
    coverages: Sequence[float] = CURVE_COVERAGES,
    seed: int = 0,
    **impute_kwargs: Any,
) -> pd.DataFrame:
    """Nominal against empirical coverage of ``model``'s intervals, per missingness level.

    Observed entries of ``adata`` (samples the model was neither trained nor calibrated on)
    are hidden at random at each rate, and all genes but a random panel (the same for every
    sample) per panel size; the hidden entries are restored with
    ``model.impute_expression(..., coverage=coverages)`` and scored. ``adata`` is not
    changed. Plot with :func:`gexbert_sc.pl.calibration`.

    Parameters
    ----------
    model
        A trained, calibrated :class:`~gexbert_sc.GexBERT`.
    adata
        Held-out samples with the model's genes and known values.
    rates
        Shares of the observed entries hidden at random, each in (0, 1).
    panel_sizes
        Genes kept by each random panel.
    coverages
        Nominal coverages, each in (0, 1).
    seed
        Seed of the hidden entries and panels.
    **impute_kwargs
        Passed to :meth:`~gexbert_sc.GexBERT.impute_expression` (e.g. ``batch_size``).

    Returns
    -------
    One row per missingness level and nominal coverage: ``missingness`` (e.g.
    ``"random 10 %"``, ``"panel 16 genes"``), ``observed_share`` (mean share of genes the
    samples kept), ``nominal``, ``empirical``, ``worst_decile`` (:func:`worst_gene_coverage`),
    ``mean_width`` and ``n_entries``.

    Raises
    ------
    ValueError
        If a coverage, rate or panel size is invalid.
    """
    levels = check_coverage(list(coverages))
    expression = model.expression_of(adata)
    setup = model.registry_["setup_args"]
    truth = measured_matrix(expression, setup)
    conditions = [(f"random {r * 100:g} %", mask_entries(truth, r, seed=seed)) for r in rates]
    check_positive_integers(**{f"panel_sizes[{i}]": s for i, s in enumerate(panel_sizes)})
    for size in panel_sizes:
        conditions.append((f"panel {size} genes", _hide_panel(truth, size, seed)))
    rows = []
    for name, (masked, hidden) in conditions:
        query = _with_values(expression, setup, masked)
        result = model.impute_expression(query, coverage=levels, **impute_kwargs)
        share = float(np.mean(np.isfinite(masked).mean(axis=1)))
        for i, level in enumerate(levels):
            lower, upper = result.lower[i], result.upper[i]
            rows.append(
                {
                    "missingness": name,
                    "observed_share": share,
                    "nominal": level,
                    "empirical": interval_coverage(truth, lower, upper, hidden),
                    "worst_decile": worst_gene_coverage(truth, lower, upper, hidden),
                    "mean_width": interval_width(lower, upper, hidden),
                    "n_entries": int(hidden.sum()),
                }
            )
    return pd.DataFrame(rows)


def _hide_panel(values: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hide every observed entry outside one random panel of ``size`` genes."""
    panel = _rng(seed).choice(values.shape[1], min(size, values.shape[1]), replace=False)
    hidden = np.isfinite(values)
    hidden[:, panel] = False
    masked = values.copy()
    masked[hidden] = np.nan
    return masked, hidden


def _with_values(expression: AnnData, setup: dict, values: np.ndarray) -> AnnData:
    """Copy of ``expression`` whose registered values are ``values`` (NaN = missing)."""
    query = expression.copy()
    layer, missing_layer = setup.get("layer"), setup.get("missing_layer")
    if layer is None:
        query.X = values
    else:
        query.layers[layer] = values
    if missing_layer is not None:
        query.layers[missing_layer] = np.isnan(values)
    return query


def _check_intervals(
    truth: npt.ArrayLike | None, lower: npt.ArrayLike, upper: npt.ArrayLike, mask: npt.ArrayLike
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
    """Check arrays of one shape, a non-empty boolean mask, values where it is set."""
    lower, upper = _dense(lower, "lower"), _dense(upper, "upper")
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        msg = f"`mask` must be a boolean array (True = scored entry): got dtype {mask.dtype}."
        raise TypeError(msg)
    arrays = {"lower": lower, "upper": upper, "mask": mask}
    if truth is not None:
        arrays["truth"] = truth = _dense(truth, "truth")
    if len({a.shape for a in arrays.values()}) != 1:
        shapes = ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
        msg = f"The arrays must have one shape: got {shapes}."
        raise ValueError(msg)
    if not mask.any():
        msg = "`mask` selects no entry: there is nothing to score."
        raise ValueError(msg)
    for name in ("lower", "upper", "truth"):
        if name in arrays and np.isnan(arrays[name][mask]).any():
            msg = f"`{name}` holds NaN at masked entries: expected a value at every one."
            raise ValueError(msg)
    return truth, lower, upper, mask
