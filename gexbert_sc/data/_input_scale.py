"""Decide whether registered values are counts or already on a log scale."""

from __future__ import annotations

import logging
from typing import Any, Literal, get_args

import numpy as np

from gexbert_sc.data._matrix import sample_values

logger = logging.getLogger(__name__)

InputScale = Literal["auto", "counts", "log"]


def check_input_scale(input_scale: str) -> None:
    """Raise a :class:`ValueError` unless ``input_scale`` is one of :data:`InputScale`."""
    allowed = get_args(InputScale)
    if input_scale not in allowed:
        msg = f"`input_scale` must be one of {allowed}, got {input_scale!r}."
        raise ValueError(msg)


def resolve_input_scale(matrix: Any, input_scale: InputScale) -> Literal["counts", "log"]:
    """Resolve ``"auto"`` by looking at the data, and check an explicit choice against it.

    Values are counts when every observed value sampled is a non-negative integer; anything
    else (negative or fractional values) is treated as already normalised and log-transformed.

    Parameters
    ----------
    matrix
        The registered expression matrix (NaN marks missing values).
    input_scale
        ``"auto"``, ``"counts"`` or ``"log"``.

    Returns
    -------
    ``"counts"`` or ``"log"``.
    """
    check_input_scale(input_scale)
    values = sample_values(matrix)
    values = values[np.isfinite(values)]
    has_negative = bool((values < 0).any())
    if input_scale == "counts":
        if has_negative:
            msg = (
                "`input_scale='counts'` but the data hold negative values "
                f"(min {values.min():.3g}); counts must be non-negative. Pass "
                "`input_scale='log'` for normalised log-scale values."
            )
            raise ValueError(msg)
        return "counts"
    if input_scale == "log":
        return "log"
    is_integer = values.size > 0 and not has_negative and np.all(values == np.round(values))
    resolved = "counts" if is_integer else "log"
    if resolved == "log" and values.size and values.max() > 50:
        logger.warning(
            "Values are not integer counts but reach %.3g: if they are normalised but not "
            "log-transformed, run `sc.pp.log1p` first or pass `input_scale`.",
            values.max(),
        )
    logger.info("Input values detected as %s.", resolved)
    return resolved
