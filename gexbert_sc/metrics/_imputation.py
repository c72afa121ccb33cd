"""Hide known entries, then score how well a method restores them."""

from __future__ import annotations

from numbers import Integral, Real
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from gexbert_sc.utils import doc_params

if TYPE_CHECKING:
    import numpy.typing as npt

#: Parameters shared by the per-gene correlation scores.
DOC_PER_GENE_PARAMS = """\
filled
        ``(n_samples, n_genes)`` restored values.
    truth
        The values before they were hidden, same shape.
    mask
        Boolean, same shape: the entries that were hidden.
    min_entries
        Fewest masked entries (at least 2) a gene needs to count."""


def mask_entries(
    values: npt.ArrayLike, fraction: float, *, seed: int = 0
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.bool_]]:
    """Hide observed entries completely at random (MCAR).

    Each observed (finite) entry is hidden independently with probability ``fraction``, so
    about that fraction of them is hidden; entries that are already missing stay missing and
    are never part of the mask.

    Parameters
    ----------
    values
        Dense ``(n_samples, n_genes)`` values; NaN marks a missing entry. A sparse matrix is
        refused: hiding entries makes its zeros explicit, pass ``values.toarray()``.
    fraction
        Probability, in ``(0, 1)``, that an observed entry is hidden.
    seed
        Seed of the local random generator; the same seed hides the same entries.

    Returns
    -------
    masked
        A floating-point copy of ``values`` with NaN at the hidden entries (integer input is
        converted to ``float64``).
    mask
        ``True`` at the hidden entries.

    Examples
    --------
    >>> import numpy as np
    >>> from gexbert_sc.metrics import mask_entries
    >>> masked, mask = mask_entries(np.ones((100, 50)), 0.3, seed=0)
    >>> bool(np.isnan(masked[mask]).all()), round(float(mask.mean()), 2)
    (True, 0.3)
    """
    values = _check_values(values)
    _check_fraction(fraction, "fraction")
    rng = _rng(seed)
    return _hide(values, rng.random(values.shape) < fraction)


def mask_genes(
    values: npt.ArrayLike,
    fraction: float,
    *,
    sample_fraction: float = 1.0,
    seed: int = 0,
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.bool_]]:
    """Hide whole genes in a random block of samples, as when a cohort used a smaller panel.

    A random set of samples (each with probability ``sample_fraction``) loses a random set
    of genes (each with probability ``fraction``): every observed entry of those genes in
    those samples is hidden.

    Parameters
    ----------
    values
        Dense ``(n_samples, n_genes)`` values; NaN marks a missing entry. A sparse matrix is
        refused, as in :func:`mask_entries`.
    fraction
        Probability, in ``(0, 1)``, that a gene is hidden.
    sample_fraction
        Probability, in ``(0, 1]``, that a sample loses the hidden genes (``1``: all samples).
    seed
        Seed of the local random generator: the samples are drawn first, then the genes.

    Returns
    -------
    masked
        A floating-point copy of ``values`` with NaN at the hidden entries.
    mask
        ``True`` at the hidden entries: observed entries in the rows and columns drawn.

    Examples
    --------
    >>> import numpy as np
    >>> from gexbert_sc.metrics import mask_genes
    >>> _, mask = mask_genes(np.ones((6, 4)), 0.5, sample_fraction=0.5, seed=1)
    >>> mask.astype(int)
    array([[0, 0, 0, 0],
           [0, 0, 0, 0],
           [0, 1, 0, 1],
           [0, 0, 0, 0],
           [0, 1, 0, 1],
           [0, 1, 0, 1]])
    """
    values = _check_values(values)
    _check_fraction(fraction, "fraction")
    _check_fraction(sample_fraction, "sample_fraction", closed_right=True)
    rng = _rng(seed)
    samples = rng.random(values.shape[0]) < sample_fraction
    genes = rng.random(values.shape[1]) < fraction
    return _hide(values, samples[:, None] & genes[None, :])


def masked_rmse(filled: npt.ArrayLike, truth: npt.ArrayLike, mask: npt.ArrayLike) -> float:
    """Root mean squared error of a restoration over the masked entries only.

    Parameters
    ----------
    filled
        ``(n_samples, n_genes)`` restored values, e.g. ``layers["gexbert_imputed"]``.
    truth
        The values before they were hidden, same shape.
    mask
        Boolean, same shape: the entries that were hidden (the second output of
        :func:`mask_entries`).

    Returns
    -------
    ``sqrt(mean((filled - truth)**2))`` over the masked entries.

    Examples
    --------
    >>> import numpy as np
    >>> from gexbert_sc.metrics import masked_rmse
    >>> truth = np.zeros((2, 2))
    >>> filled = np.array([[3.0, 9.0], [4.0, 9.0]])
    >>> masked_rmse(filled, truth, np.array([[True, False], [True, False]]))
    3.5355339059327378
    """
    filled, truth, mask = _check_scored(filled, truth, mask)
    return float(np.sqrt(np.mean((filled[mask] - truth[mask]) ** 2)))


@doc_params(per_gene_params=DOC_PER_GENE_PARAMS)
def gene_correlations(
    filled: npt.ArrayLike, truth: npt.ArrayLike, mask: npt.ArrayLike, *, min_entries: int = 5
) -> npt.NDArray[np.float64]:
    """Pearson correlation between restored and true masked values, gene by gene.

    A gene counts when it has at least ``min_entries`` masked entries and neither its
    restored nor its true masked values are constant (a constant fill, such as the gene's
    mean, has no correlation).

    Parameters
    ----------
    {per_gene_params}

    Returns
    -------
    ``(n_genes,)`` Pearson r of each gene; NaN for the genes that do not count.

    Examples
    --------
    >>> import numpy as np
    >>> from gexbert_sc.metrics import gene_correlations
    >>> truth = np.arange(12.0).reshape(6, 2)
    >>> gene_correlations(-truth, truth, np.ones_like(truth, dtype=bool), min_entries=3)
    array([-1., -1.])
    """
    filled, truth, mask = _check_scored(filled, truth, mask)
    if isinstance(min_entries, bool) or not isinstance(min_entries, Integral) or min_entries < 2:
        msg = f"`min_entries` must be an integer of at least 2: got {min_entries!r}."
        raise ValueError(msg)
    correlations = np.full(mask.shape[1], np.nan)
    for gene in np.flatnonzero(mask.sum(axis=0) >= min_entries):
        rows = mask[:, gene]
        a, b = filled[rows, gene], truth[rows, gene]
        if a.std() > 0 and b.std() > 0:
            correlations[gene] = np.corrcoef(a, b)[0, 1]
    return correlations


@doc_params(per_gene_params=DOC_PER_GENE_PARAMS)
def median_gene_correlation(
    filled: npt.ArrayLike, truth: npt.ArrayLike, mask: npt.ArrayLike, *, min_entries: int = 5
) -> float:
    """Median over genes of the Pearson correlation between restored and true masked values.

    The genes that count are those of :func:`gene_correlations`: at least ``min_entries``
    masked entries, neither restored nor true masked values constant.

    Parameters
    ----------
    {per_gene_params}

    Returns
    -------
    The median Pearson r over the genes that count; NaN when no gene counts.

    Examples
    --------
    >>> import numpy as np
    >>> from gexbert_sc.metrics import median_gene_correlation
    >>> truth = np.arange(12.0).reshape(6, 2)
    >>> filled = truth.copy()
    >>> filled[:, 1] *= -1
    >>> mask = np.ones_like(truth, dtype=bool)
    >>> median_gene_correlation(filled, truth, mask, min_entries=3)
    0.0
    """
    correlations = gene_correlations(filled, truth, mask, min_entries=min_entries)
    counted = correlations[~np.isnan(correlations)]
    return float(np.median(counted)) if counted.size else float("nan")


def _check_values(values: npt.ArrayLike) -> np.ndarray:
    """Return ``values`` as a dense 2-D numeric array with an observed entry, or raise."""
    values = _dense(values, "values")
    if values.ndim != 2:
        msg = f"`values` must be 2-D (samples × genes): got shape {values.shape}."
        raise ValueError(msg)
    if not np.isfinite(values).any():
        msg = "`values` has no observed (finite) entry to hide."
        raise ValueError(msg)
    return values


def _dense(values: npt.ArrayLike, name: str) -> np.ndarray:
    """Return ``values`` as a dense numeric array; refuse sparse matrices and other data."""
    if sp.issparse(values):
        msg = (
            f"`{name}` is a sparse matrix; pass a dense array (`{name}.toarray()`): hidden "
            "entries are NaN, so the result is dense anyway."
        )
        raise TypeError(msg)
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.number):
        msg = f"`{name}` must hold numbers: got dtype {array.dtype}."
        raise TypeError(msg)
    return array


def _check_fraction(value: float, name: str, *, closed_right: bool = False) -> None:
    """Refuse a fraction outside ``(0, 1)`` (``(0, 1]`` when ``closed_right``)."""
    interval = "(0, 1]" if closed_right else "(0, 1)"
    inside = isinstance(value, Real) and not isinstance(value, bool) and 0 < value
    if not inside or not (value <= 1 if closed_right else value < 1):
        msg = f"`{name}` must be a number in {interval}: got {value!r}."
        raise ValueError(msg)


def _rng(seed: int) -> np.random.Generator:
    """Return a local generator (the global numpy state is never used)."""
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        msg = f"`seed` must be a non-negative integer: got {seed!r}."
        raise ValueError(msg)
    return np.random.default_rng(seed)


def _hide(values: np.ndarray, drawn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the copy with NaN where ``drawn`` meets an observed entry, and that mask."""
    mask = drawn & np.isfinite(values)
    dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
    masked = np.array(values, dtype=dtype, order="C")  # always a copy, in C order
    masked[mask] = np.nan
    return masked, mask


def _check_scored(
    filled: npt.ArrayLike, truth: npt.ArrayLike, mask: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check for arrays of one shape, a non-empty boolean mask, finite values where it is set."""
    filled, truth = _dense(filled, "filled"), _dense(truth, "truth")
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        msg = f"`mask` must be a boolean array (True = hidden entry): got dtype {mask.dtype}."
        raise TypeError(msg)
    if not filled.shape == truth.shape == mask.shape:
        msg = (
            f"`filled`, `truth` and `mask` must have one shape: got {filled.shape}, "
            f"{truth.shape} and {mask.shape}."
        )
        raise ValueError(msg)
    if not mask.any():
        msg = "`mask` selects no entry: there is nothing to score."
        raise ValueError(msg)
    for name, array in (("filled", filled), ("truth", truth)):
        n_bad = int((~np.isfinite(array[mask])).sum())
        if n_bad:
            msg = (
                f"`{name}` holds {n_bad} NaN or infinite values at masked entries: expected "
                "a finite value at every masked entry."
            )
            raise ValueError(msg)
    return filled, truth, mask
