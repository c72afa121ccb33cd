"""Checks of arguments (hyper-parameters, models), run before any computation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def is_integer(value: Any) -> bool:
    """Whether ``value`` is a Python or numpy integer (``bool`` is not).

    Parameters
    ----------
    value
        The value to test.

    Returns
    -------
    ``True`` for integers.
    """
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite real number, integer or float (``bool`` is not).

    Parameters
    ----------
    value
        The value to test.

    Returns
    -------
    ``True`` for finite numbers.
    """
    is_real = isinstance(value, int | float | np.integer | np.floating)
    return is_real and not isinstance(value, bool) and math.isfinite(value)


def check_positive_integers(**values: Any) -> None:
    """Raise a :class:`ValueError` naming the first argument that is not a positive integer.

    Parameters
    ----------
    **values
        Argument names and values.
    """
    for name, value in values.items():
        if not is_integer(value) or value < 1:
            msg = f"`{name}` must be a positive integer, got {value!r}."
            raise ValueError(msg)


def check_fraction(name: str, value: Any, *, closed_low: bool) -> None:
    """Raise a :class:`ValueError` unless ``value`` is in ``[0, 1)`` (``closed_low``) or ``(0, 1)``.

    Parameters
    ----------
    name
        Argument name, for the message.
    value
        The value to check.
    closed_low
        Whether 0 is allowed.
    """
    in_range = is_finite_number(value) and (value >= 0 if closed_low else value > 0) and value < 1
    if not in_range:
        interval = "[0, 1)" if closed_low else "(0, 1)"
        msg = f"`{name}` must be in {interval}, got {value!r}."
        raise ValueError(msg)


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
    if not isinstance(profile_fit, bool | np.bool_):
        msg = f"`profile_fit` must be True or False, got {profile_fit!r}."
        raise ValueError(msg)
    check_fraction("dropout", dropout, closed_low=True)
    if not is_finite_number(bottleneck_weight) or bottleneck_weight < 0:
        msg = f"`bottleneck_weight` must be a finite number >= 0, got {bottleneck_weight!r}."
        raise ValueError(msg)
    if seed is not None and not is_integer(seed):
        msg = f"`seed` must be an integer or None, got {seed!r}."
        raise ValueError(msg)


def check_model(model: Any, model_cls: type | None = None) -> None:
    """Raise unless ``model`` is a trained model of ``model_cls`` (default: the GexBERT family).

    Parameters
    ----------
    model
        The ``model`` argument of a writer.
    model_cls
        The model class the writer needs.

    Raises
    ------
    TypeError
        If ``model`` is not an instance of ``model_cls``.
    RuntimeError
        If it is not trained.
    """
    from gexbert_sc.model import GexBERTBase

    model_cls = GexBERTBase if model_cls is None else model_cls
    if not isinstance(model, model_cls):
        expected = "gexbert_sc.GexBERT" if model_cls is GexBERTBase else model_cls.__name__
        msg = f"`model` must be a {expected}, got {type(model).__name__}."
        raise TypeError(msg)
    model._check_if_trained(
        message=f"`model` ({type(model).__name__}) is not trained yet; run `model.train()` first."
    )
