"""Survival columns: every bad time or event column gives a clear error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import make_survival_adata

from gexbert_sc.data._survival import survival_data


@pytest.fixture
def cohort():
    return make_survival_adata(n_obs=20, n_vars=5)


def test_valid_columns_are_read(cohort):
    survival = survival_data(cohort, "time", "event")
    np.testing.assert_array_equal(survival.time, cohort.obs["time"].to_numpy())
    assert survival.event.dtype == bool
    np.testing.assert_array_equal(survival.event, cohort.obs["event"].to_numpy() == 1)


def test_boolean_events_are_accepted(cohort):
    cohort.obs["event"] = cohort.obs["event"].astype(bool)
    assert survival_data(cohort, "time", "event").event.sum() == cohort.obs["event"].sum()


@pytest.mark.parametrize(
    ("key", "value", "error", "match"),
    [
        ("time", "text", TypeError, "must hold numeric follow-up times"),
        ("time", np.nan, ValueError, "1 missing or infinite times"),
        ("time", np.inf, ValueError, "1 missing or infinite times"),
        ("time", -1.0, ValueError, "1 negative times"),
        ("event", 2, ValueError, r"must be boolean or 0/1.*found \['0.0', '1.0', '2.0'\]"),
        ("event", np.nan, ValueError, "must be boolean or 0/1"),
        ("event", "yes", ValueError, "must be boolean or 0/1"),
    ],
)
def test_bad_values_name_the_column(cohort, key, value, error, match):
    column = cohort.obs[key].astype(object if isinstance(value, str) else float)
    column.iloc[0] = value
    cohort.obs[key] = column
    before = cohort.obs.copy()
    with pytest.raises(error, match=match):
        survival_data(cohort, "time", "event")
    pd.testing.assert_frame_equal(cohort.obs, before)


def test_no_event_is_refused(cohort):
    cohort.obs["event"] = 0
    with pytest.raises(ValueError, match="has no event"):
        survival_data(cohort, "time", "event")


@pytest.mark.parametrize(
    ("argument", "keys"), [("time_key", ("t", "event")), ("event_key", ("time", "e"))]
)
def test_missing_columns_name_the_argument(cohort, argument, keys):
    with pytest.raises(KeyError, match=f"`{argument}="):
        survival_data(cohort, *keys)
