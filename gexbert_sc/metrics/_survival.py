"""Survival metrics: univariate Cox screening, concordance and the log-rank test."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from lifelines.statistics import multivariate_logrank_test
from lifelines.utils import concordance_index as lifelines_concordance
from scipy.stats import chi2


class ScoreTest(NamedTuple):
    """Per-gene univariate Cox score tests."""

    #: ``(n_genes,)`` score statistic ``U / sqrt(I)``: positive when higher expression goes
    #: with a higher hazard.
    z: np.ndarray
    #: ``(n_genes,)`` two-sided p-values (NaN for a gene that is constant or has NaN).
    pvalue: np.ndarray


def cox_score_test(x: np.ndarray, time: np.ndarray, event: np.ndarray) -> ScoreTest:
    """Univariate Cox proportional-hazards score test of every column of ``x``, at once.

    For each gene, the score ``U = Σ_events (x_i - x̄_R(t_i))`` and information
    ``I = Σ_events var_R(t_i)(x)`` of the Cox partial likelihood at ``β = 0``, with
    ``R(t)`` the samples still at risk at ``t`` (Breslow ties); ``U² / I`` is χ² with one
    degree of freedom. This is the standard screening rule for prognostic genes (for a 0/1
    covariate without tied times it is the log-rank test), computed for thousands of genes
    in one pass instead of one Cox fit per gene.

    Parameters
    ----------
    x
        ``(n_samples, n_genes)`` expression values.
    time
        ``(n_samples,)`` follow-up times.
    event
        ``(n_samples,)`` bool, ``True`` where the event was observed.

    Returns
    -------
    The score statistics and p-values of the genes.
    """
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(time, kind="stable")
    x, time, event = x[order], np.asarray(time)[order], np.asarray(event, dtype=bool)[order]
    # samples are sorted by time: the risk set of sample i starts at the first sample whose
    # time is not before t_i, so reverse cumulative sums give every risk set's moments
    first = np.searchsorted(time, time, side="left")[event]
    n_at_risk = (len(time) - first)[:, None]
    sum_x = np.cumsum(x[::-1], axis=0)[::-1][first]
    sum_x2 = np.cumsum((x**2)[::-1], axis=0)[::-1][first]
    mean = sum_x / n_at_risk
    score = (x[event] - mean).sum(axis=0)
    information = (sum_x2 / n_at_risk - mean**2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        valid = information > 1e-12 * np.maximum(1.0, np.abs(sum_x2).max(axis=0))
        z = np.where(valid, score / np.sqrt(information), np.nan)
    return ScoreTest(z, chi2.sf(z**2, df=1))


def concordance_index(time: np.ndarray, risk: np.ndarray, event: np.ndarray) -> float:
    """Harrell's concordance index of predicted risks (lifelines).

    Parameters
    ----------
    time
        ``(n,)`` follow-up times.
    risk
        ``(n,)`` predicted risks (higher: earlier event), e.g. ``obs["gexbert_risk"]``.
    event
        ``(n,)`` bool or 0/1 event indicators.

    Returns
    -------
    The share of comparable pairs ordered correctly (0.5: random; 1: perfect).
    """
    # lifelines scores predicted survival times: a higher risk is a shorter time
    return float(lifelines_concordance(time, -np.asarray(risk, dtype=float), event))


def logrank_pvalue(time: np.ndarray, groups: np.ndarray, event: np.ndarray) -> float:
    """p-value of the log-rank test that the groups share one survival curve (lifelines).

    Parameters
    ----------
    time
        ``(n,)`` follow-up times.
    groups
        ``(n,)`` group of each sample (two or more groups).
    event
        ``(n,)`` bool or 0/1 event indicators.

    Returns
    -------
    The p-value.
    """
    return float(multivariate_logrank_test(time, groups, event).p_value)
