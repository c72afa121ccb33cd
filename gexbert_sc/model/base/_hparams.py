"""Checks of the GexBERT hyper-parameters, run before any computation."""

from __future__ import annotations

from typing import Any

import numpy as np

from gexbert_sc.utils import check_fraction, check_positive_integers, is_finite_number, is_integer


def check_withhold_range(withhold_range: Any) -> None:
    """Raise a :class:`ValueError` unless ``withhold_range`` is ``None`` or a valid range.

    A valid range is ``(low, high)`` with ``0 <= low <= high < 1`` and ``high > 0``.

    Parameters
    ----------
    withhold_range
        The value to check.
    """
    if withhold_range is None:
        return
    pair = tuple(withhold_range) if isinstance(withhold_range, tuple | list) else ()
    valid = (
        len(pair) == 2
        and all(is_finite_number(v) for v in pair)
        and 0 <= pair[0] <= pair[1] < 1
        and pair[1] > 0
    )
    if not valid:
        msg = (
            "`withhold_range` must be None or (low, high) with 0 <= low <= high < 1 and "
            f"high > 0, got {withhold_range!r}."
        )
        raise ValueError(msg)


def check_architecture(
    *,
    d_model: int,
    n_layers: int,
    n_decoder_layers: int,
    n_heads: int,
    n_levels: int,
    n_context: int,
    n_inference_context: int,
    mask_ratio: float,
    withhold_range: tuple[float, float] | None,
    profile_fit: bool,
    cls_summary: bool,
    bottleneck_weight: float,
    dropout: float,
    seed: int | None,
) -> None:
    """Check every hyper-parameter of :class:`~gexbert_sc.GexBERT` (see its docstring).

    Raises
    ------
    ValueError
        Naming the argument, the value found and what was expected.
    """
    check_positive_integers(
        d_model=d_model,
        n_layers=n_layers,
        n_decoder_layers=n_decoder_layers,
        n_heads=n_heads,
        n_context=n_context,
        n_inference_context=n_inference_context,
    )
    if d_model % n_heads:
        msg = f"`d_model` ({d_model}) must be divisible by `n_heads` ({n_heads})."
        raise ValueError(msg)
    if not is_integer(n_levels) or n_levels < 3:
        msg = (
            f"`n_levels` must be an integer of at least 3 (zero level + 2 bins), got {n_levels!r}."
        )
        raise ValueError(msg)
    check_fraction("mask_ratio", mask_ratio, closed_low=True)
    check_withhold_range(withhold_range)
    if withhold_range is None and mask_ratio == 0:
        msg = (
            "`mask_ratio` must be > 0 when `withhold_range` is None, got 0: training would "
            "have nothing to restore."
        )
        raise ValueError(msg)
    for name, flag in (("profile_fit", profile_fit), ("cls_summary", cls_summary)):
        if not isinstance(flag, bool | np.bool_):
            msg = f"`{name}` must be True or False, got {flag!r}."
            raise ValueError(msg)
    check_fraction("dropout", dropout, closed_low=True)
    if not is_finite_number(bottleneck_weight) or bottleneck_weight < 0:
        msg = f"`bottleneck_weight` must be a finite number >= 0, got {bottleneck_weight!r}."
        raise ValueError(msg)
    if seed is not None and not is_integer(seed):
        msg = f"`seed` must be an integer or None, got {seed!r}."
        raise ValueError(msg)
