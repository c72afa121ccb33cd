"""Survival columns: the checks every survival function runs, and their registered fields."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
from scvi.data.fields import NumericalObsField

from gexbert_sc._constants import REGISTRY_KEYS
from gexbert_sc.data._validation import check_obs_key

if TYPE_CHECKING:
    from anndata import AnnData


class SurvivalData(NamedTuple):
    """Checked follow-up times and event indicators of the samples."""

    #: ``(n,)`` float64 follow-up times, finite and ``>= 0``.
    time: np.ndarray
    #: ``(n,)`` bool, ``True`` where the event was observed (``False``: censored).
    event: np.ndarray


def survival_data(adata: AnnData, time_key: str, event_key: str) -> SurvivalData:
    """Read and check the survival columns of ``adata.obs``.

    Parameters
    ----------
    adata
        AnnData whose ``obs`` holds the columns.
    time_key
        ``obs`` column of follow-up times (to the event or to censoring): numeric, finite,
        non-negative.
    event_key
        ``obs`` column of event indicators: boolean, or numbers that are all 0 or 1
        (1: the event was observed, 0: censored).

    Returns
    -------
    The checked times and events.

    Raises
    ------
    KeyError
        If a column is missing (naming the argument).
    TypeError
        If the times are not numeric.
    ValueError
        For NaN, infinite or negative times, events other than 0/1 or boolean, or no event
        at all.
    """
    check_obs_key(adata, time_key, "time_key")
    check_obs_key(adata, event_key, "event_key")
    return SurvivalData(
        _checked_times(adata.obs[time_key], time_key),
        _checked_events(adata.obs[event_key], event_key),
    )


def _checked_times(column: pd.Series, time_key: str) -> np.ndarray:
    where = f"`adata.obs[{time_key!r}]` (`time_key`)"
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        msg = f"{where} must hold numeric follow-up times, got dtype {column.dtype}."
        raise TypeError(msg)
    time = column.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(time)
    if bad.any():
        msg = f"{where} has {int(bad.sum())} missing or infinite times; every sample needs one."
        raise ValueError(msg)
    if (time < 0).any():
        msg = f"{where} has {int((time < 0).sum())} negative times (smallest {time.min():g})."
        raise ValueError(msg)
    return time


def _checked_events(column: pd.Series, event_key: str) -> np.ndarray:
    where = f"`adata.obs[{event_key!r}]` (`event_key`)"
    if pd.api.types.is_bool_dtype(column) and not column.isna().any():
        event = column.to_numpy(dtype=bool)
    else:
        numeric = pd.api.types.is_numeric_dtype(column) and not column.isna().any()
        values = column.to_numpy(dtype=np.float64, na_value=np.nan) if numeric else None
        if values is None or not np.isin(values, (0.0, 1.0)).all():
            found = sorted(map(str, pd.unique(column)))[:5]
            msg = f"{where} must be boolean or 0/1 (1: event, 0: censored); found {found}."
            raise ValueError(msg)
        event = values == 1.0
    if not event.any():
        msg = f"{where} has no event (every sample is censored): survival cannot be modelled."
        raise ValueError(msg)
    return event


def survival_fields(time_key: str, event_key: str) -> list[NumericalObsField]:
    """Return the registered fields of the follow-up times and event indicators."""
    return [
        NumericalObsField(REGISTRY_KEYS.TIME_KEY, time_key),
        NumericalObsField(REGISTRY_KEYS.EVENT_KEY, event_key),
    ]
