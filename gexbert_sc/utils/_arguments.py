"""Checks of plain arguments (integers, numbers, fractions), with messages naming them."""

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
