"""Survival metrics: the vectorised Cox score test against lifelines; concordance; log-rank."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.statistics import logrank_test

from gexbert_sc.metrics import concordance_index, cox_score_test, logrank_pvalue


@pytest.fixture
def cohort():
    rng = np.random.default_rng(1)
    n = 80
    group = rng.random(n) < 0.5
    x = np.c_[group.astype(float), rng.normal(size=n), np.ones(n)]
    time = rng.exponential(np.exp(-1.0 * group))
    event = rng.random(n) < 0.7
    return x, time, event


def test_score_test_of_a_two_group_covariate_is_the_logrank_test(cohort):
    x, time, event = cohort
    group = x[:, 0] == 1
    test = cox_score_test(x, time, event)
    logrank = logrank_test(time[group], time[~group], event[group], event[~group])
    assert test.z[0] ** 2 == pytest.approx(logrank.test_statistic, rel=1e-10)
    assert test.pvalue[0] == pytest.approx(logrank.p_value, rel=1e-8)
    # a higher hazard in group 1 gives a positive statistic
    assert test.z[0] > 0


def test_score_test_agrees_with_a_fitted_cox_model(cohort):
    x, time, event = cohort
    frame = pd.DataFrame({"x": x[:, 1], "time": time, "event": event})
    fitted = CoxPHFitter().fit(frame, "time", "event")
    # score and Wald tests agree closely for a weak effect (measured 0.36799 vs 0.36816)
    assert cox_score_test(x, time, event).pvalue[1] == pytest.approx(
        fitted.summary["p"].iloc[0], abs=0.01
    )


def test_constant_gene_has_no_pvalue(cohort):
    x, time, event = cohort
    assert np.isnan(cox_score_test(x, time, event).pvalue[2])


def test_concordance_counts_higher_risk_as_earlier_event():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.ones(4, dtype=bool)
    assert concordance_index(time, np.array([4, 3, 2, 1]), event) == 1.0
    assert concordance_index(time, np.array([1, 2, 3, 4]), event) == 0.0


def test_logrank_pvalue_separates_different_curves(cohort):
    x, time, event = cohort
    assert logrank_pvalue(time, x[:, 0], event) < 1e-4
    rng = np.random.default_rng(0)
    assert logrank_pvalue(time, rng.integers(0, 2, len(time)), event) > 0.01
