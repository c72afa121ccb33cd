"""Decide whether registered values are counts or already on a log scale."""

from __future__ import annotations

import logging
from typing import Any, Literal, get_args

from gexbert_sc.data._matrix import ValueScan, scan_values

logger = logging.getLogger(__name__)

InputScale = Literal["auto", "counts", "log"]

#: Largest value a query of a log-scale model may hold when all its values are integers
#: (``log1p`` of normalised expression stays far below it; raw counts soon exceed it).
MAX_LOG_INTEGER = 30


def check_input_scale(input_scale: str) -> None:
    """Raise a :class:`ValueError` unless ``input_scale`` is one of :data:`InputScale`."""
    allowed = get_args(InputScale)
    if input_scale not in allowed:
        msg = f"`input_scale` must be one of {allowed}, got {input_scale!r}."
        raise ValueError(msg)


def resolve_input_scale(matrix: Any, input_scale: InputScale) -> Literal["counts", "log"]:
    """Resolve ``"auto"`` by looking at the data, and check an explicit choice against it.

    Values are counts when every observed value is a non-negative integer; anything else
    (negative or fractional values) is treated as already normalised and log-transformed.

    Parameters
    ----------
    matrix
        The registered expression matrix (NaN marks missing values).
    input_scale
        ``"auto"``, ``"counts"`` or ``"log"``.

    Returns
    -------
    ``"counts"`` or ``"log"``.

    Raises
    ------
    ValueError
        If ``input_scale="counts"`` but a value is negative or not an integer.
    """
    check_input_scale(input_scale)
    return scale_of(scan_values(matrix), input_scale)


def scale_of(scan: ValueScan, input_scale: InputScale) -> Literal["counts", "log"]:
    """Resolve or check ``input_scale`` from a full scan of the values (see above).

    Parameters
    ----------
    scan
        :func:`~gexbert_sc.data._matrix.scan_values` of the registered matrix.
    input_scale
        ``"auto"``, ``"counts"`` or ``"log"``.

    Returns
    -------
    ``"counts"`` or ``"log"``.
    """
    has_negative = bool(scan.minimum < 0)
    if input_scale == "counts":
        if has_negative:
            msg = (
                "`input_scale='counts'` but the data hold negative values "
                f"(min {scan.minimum:.3g}); counts must be non-negative. Pass "
                "`input_scale='log'` for normalised log-scale values."
            )
            raise ValueError(msg)
        if scan.first_fraction is not None:
            msg = (
                "`input_scale='counts'` but the data hold values that are not integers "
                f"(e.g. {scan.first_fraction:.6g}); counts must be whole numbers. Pass "
                "`input_scale='log'` for normalised log-scale values, or round estimated "
                "counts first (`np.rint`)."
            )
            raise ValueError(msg)
        return "counts"
    if input_scale == "log":
        return "log"
    is_counts = scan.n_finite > 0 and not has_negative and scan.first_fraction is None
    resolved = "counts" if is_counts else "log"
    if resolved == "log" and scan.n_finite and scan.maximum > 50:
        logger.warning(
            "Values are not integer counts but reach %.3g: if they are normalised but not "
            "log-transformed, run `sc.pp.log1p` first or pass `input_scale`.",
            scan.maximum,
        )
    logger.info("Input values detected as %s.", resolved)
    return resolved


def check_query_values(matrix: Any, model_is_counts: bool, where: str) -> None:
    """Refuse a query with infinite values, or on another scale than the model's training data.

    A counts model refuses negative or fractional values (log-normalised data); a log-scale
    model refuses data whose values are all non-negative integers reaching more than
    :data:`MAX_LOG_INTEGER` (raw counts).

    Parameters
    ----------
    matrix
        The query's registered expression matrix (every value is scanned).
    model_is_counts
        Whether the model was trained on counts.
    where
        The matrix's name in the message, e.g. ``"adata.X"``.

    Raises
    ------
    ValueError
        Saying what was found and what the model expects.
    """
    scan = scan_values(matrix)
    if scan.n_infinite:
        msg = (
            f"`{where}` holds {scan.n_infinite} infinite values; expected finite values, "
            "with NaN marking missing ones."
        )
        raise ValueError(msg)
    if scan.n_finite == 0:
        return
    integers = scan.first_fraction is None
    if model_is_counts and (scan.minimum < 0 or not integers):
        found = (
            f"negative values (min {scan.minimum:.3g})"
            if scan.minimum < 0
            else f"values that are not integers (e.g. {scan.first_fraction:.6g})"
        )
        msg = (
            f"The model was trained on counts, but `{where}` holds {found}: it looks "
            "log-normalised. Pass the raw counts (e.g. a `counts` layer) the model expects."
        )
        raise ValueError(msg)
    if not model_is_counts and integers and scan.minimum >= 0 and scan.maximum > MAX_LOG_INTEGER:
        msg = (
            f"The model was trained on log-normalised values, but `{where}` holds integers "
            f"up to {scan.maximum:.3g}: it looks like raw counts. Normalise it as the training "
            "data were (e.g. `sc.pp.normalize_total` then `sc.pp.log1p`)."
        )
        raise ValueError(msg)
