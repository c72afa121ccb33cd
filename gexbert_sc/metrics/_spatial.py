"""Per-gene scores of predicted spatial expression, as Li et al. 2022 define them.

Li et al. (2022, Nature Methods, "Benchmarking spatial and single-cell transcriptomics
integration methods") score each held-out gene of a spatial panel by four metrics computed on
differently scaled copies of the measured and predicted values (their ``CalculateMeteics``):

- ``PCC``: Pearson correlation of the values as they are.
- ``SSIM``: the structural similarity of the two value vectors, each divided by its maximum
  (one global window; ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, ``C3 = C2 / 2``, ``L = 1``).
- ``RMSE``: root mean squared difference of the two vectors, each z-scored.
- ``JS``: Jensen-Shannon divergence (natural log) of the two vectors, each divided by its sum.

and rank methods by an accuracy score (``AS``) aggregating the four (:func:`accuracy_score`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.special import rel_entr

if TYPE_CHECKING:
    import numpy.typing as npt

#: Metrics of :func:`spatial_gene_scores`, and whether a higher value is better.
LI_METRICS = {"PCC": True, "SSIM": True, "RMSE": False, "JS": False}
# Li's code fills empty values with 1e-20 before scaling (so that constant vectors divide)
_TINY = 1e-20


def spatial_gene_scores(
    measured: npt.ArrayLike, predicted: npt.ArrayLike, genes: list[str] | None = None
) -> pd.DataFrame:
    """Score predicted against measured spatial expression, gene by gene (Li et al. 2022).

    Parameters
    ----------
    measured
        ``(n_spots, n_genes)`` measured values (cells or spots of the spatial data).
    predicted
        ``(n_spots, n_genes)`` predicted values of the same genes at the same spots, on any
        scale (PCC and RMSE ignore affine differences; SSIM and JS compare shapes after
        dividing by the maximum or the sum). Negative values are set to 0 for SSIM and JS
        (Li's scalings assume non-negative expression).
    genes
        Gene names (the result's index); default ``0 .. n_genes - 1``.

    Returns
    -------
    A DataFrame with one row per gene and columns ``PCC``, ``SSIM``, ``RMSE``, ``JS``. A
    constant vector (prediction or measurement) has ``PCC = 0`` (no linear association)
    where Pearson's r is undefined.

    Raises
    ------
    ValueError
        If the arrays differ in shape, are not 2-D, hold NaN or infinite values, or
        ``genes`` has the wrong length.

    Examples
    --------
    >>> import numpy as np
    >>> from gexbert_sc.metrics import spatial_gene_scores
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.gamma(2.0, size=(500, 3))
    >>> scores = spatial_gene_scores(truth, 2 * truth + 1)
    >>> bool(np.allclose(scores["PCC"], 1) and np.allclose(scores["RMSE"], 0))
    True
    """
    truth, guess = _check_pair(measured, predicted)
    names = _gene_names(genes, truth.shape[1])
    return pd.DataFrame(
        {
            "PCC": _pearson(truth, guess),
            "SSIM": _ssim(truth, guess),
            "RMSE": _zscore_rmse(truth, guess),
            "JS": _jensen_shannon(truth, guess),
        },
        index=pd.Index(names, name="gene"),
    )


def accuracy_score(summary: pd.DataFrame) -> pd.Series:
    """Li et al.'s accuracy score (AS) of each method from its summary metrics.

    For each of PCC, SSIM (higher is better), RMSE and JS (lower is better) the methods are
    ranked from worst (1) to best (``n_methods``); a method's AS is the mean of its four
    ranks divided by ``n_methods``: 1 for a method best on all four, ``1 / n_methods`` for
    one worst on all four. It is relative to the methods compared (ties share their mean
    rank).

    Parameters
    ----------
    summary
        One row per method, columns ``PCC``, ``SSIM``, ``RMSE``, ``JS`` (e.g. the median
        over genes of :func:`spatial_gene_scores`).

    Returns
    -------
    The AS of each method, indexed like ``summary``.

    Raises
    ------
    KeyError
        If a metric column is absent.
    """
    lacking = [m for m in LI_METRICS if m not in summary.columns]
    if lacking:
        msg = f"`summary` lacks the metric columns {lacking}; found {list(summary.columns)}."
        raise KeyError(msg)
    ranks = [summary[m].rank(ascending=higher) for m, higher in LI_METRICS.items()]
    return (pd.concat(ranks, axis=1).mean(axis=1) / len(summary)).rename("AS")


def _check_pair(measured: npt.ArrayLike, predicted: npt.ArrayLike) -> tuple[np.ndarray, ...]:
    truth = np.asarray(measured, dtype=np.float64)
    guess = np.asarray(predicted, dtype=np.float64)
    if truth.ndim != 2 or truth.shape != guess.shape:
        msg = (
            "`measured` and `predicted` must be 2-D arrays of one shape (spots x genes), got "
            f"{truth.shape} and {guess.shape}."
        )
        raise ValueError(msg)
    for name, values in (("measured", truth), ("predicted", guess)):
        if not np.isfinite(values).all():
            msg = f"`{name}` holds NaN or infinite values; expected finite values only."
            raise ValueError(msg)
    return truth, guess


def _gene_names(genes: list[str] | None, n_genes: int) -> list:
    if genes is None:
        return list(range(n_genes))
    if len(genes) != n_genes:
        msg = f"`genes` names {len(genes)} genes, but the arrays hold {n_genes}."
        raise ValueError(msg)
    return list(genes)


def _pearson(truth: np.ndarray, guess: np.ndarray) -> np.ndarray:
    a = truth - truth.mean(axis=0)
    b = guess - guess.mean(axis=0)
    denominator = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=0) / denominator
    return np.where(denominator > 0, r, 0.0)


def _scaled(values: np.ndarray, by: str) -> np.ndarray:
    """Each column divided by its maximum or sum (negatives at 0; empty columns at 1e-20)."""
    values = np.maximum(values, 0.0)
    values = np.where(values == 0, _TINY, values)
    total = values.max(axis=0) if by == "max" else values.sum(axis=0)
    return values / total


def _ssim(truth: np.ndarray, guess: np.ndarray) -> np.ndarray:
    x, y = _scaled(truth, "max"), _scaled(guess, "max")
    c1, c2 = 0.01**2, 0.03**2
    c3 = c2 / 2
    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
    sd_x, sd_y = x.std(axis=0), y.std(axis=0)
    cov = ((x - mu_x) * (y - mu_y)).mean(axis=0)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast = (2 * sd_x * sd_y + c2) / (sd_x**2 + sd_y**2 + c2)
    structure = (cov + c3) / (sd_x * sd_y + c3)
    return luminance * contrast * structure


def _zscore_rmse(truth: np.ndarray, guess: np.ndarray) -> np.ndarray:
    def zscore(values: np.ndarray) -> np.ndarray:
        sd = values.std(axis=0)
        return (values - values.mean(axis=0)) / np.where(sd > 0, sd, 1.0)

    return np.sqrt(((zscore(truth) - zscore(guess)) ** 2).mean(axis=0))


def _jensen_shannon(truth: np.ndarray, guess: np.ndarray) -> np.ndarray:
    p, q = _scaled(truth, "sum"), _scaled(guess, "sum")
    middle = (p + q) / 2
    return 0.5 * rel_entr(p, middle).sum(axis=0) + 0.5 * rel_entr(q, middle).sum(axis=0)
