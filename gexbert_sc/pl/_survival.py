"""Kaplan–Meier curves of predicted risk groups."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter

from gexbert_sc._constants import OUTPUT_KEYS
from gexbert_sc.data._survival import survival_data
from gexbert_sc.data._validation import check_obs_key
from gexbert_sc.metrics import logrank_pvalue
from gexbert_sc.pl._utils import DOC_AX_SHOW_SAVE, savefig_or_show
from gexbert_sc.utils import doc_params, is_integer

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes


def risk_groups(risk: pd.Series, n_groups: int) -> pd.Categorical:
    """Split samples into ``n_groups`` groups of (nearly) equal size by increasing risk.

    Parameters
    ----------
    risk
        Predicted risk of each sample.
    n_groups
        Number of groups (``2``: ``"low risk"`` and ``"high risk"``).

    Returns
    -------
    The group of each sample, ordered from lowest to highest risk.
    """
    if n_groups == 2:
        names = ["low risk", "high risk"]
    else:
        names = [f"risk group {i + 1}" for i in range(n_groups)]
    ranks = risk.rank(method="first").to_numpy()
    codes = np.minimum(((ranks - 1) * n_groups / len(ranks)).astype(int), n_groups - 1)
    return pd.Categorical.from_codes(codes, categories=names)


@doc_params(ax_show_save=DOC_AX_SHOW_SAVE)
def kaplan_meier(
    adata: AnnData,
    risk_key: str = OUTPUT_KEYS.RISK,
    *,
    time_key: str,
    event_key: str,
    n_groups: int = 2,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Kaplan–Meier curves of the samples split by predicted risk, with the log-rank p.

    The samples are split into ``n_groups`` groups of equal size by increasing
    ``obs[risk_key]`` (e.g. written by :func:`gexbert_sc.tl.predict_risk`); each group's
    survival curve is estimated by lifelines' Kaplan–Meier fitter (with its 95 % band), and
    the title gives the log-rank p-value of the null that the groups share one curve.

    Parameters
    ----------
    adata
        AnnData with the risk, time and event columns in ``obs``.
    risk_key
        ``obs`` column of predicted risks (higher: worse prognosis).
    time_key
        ``obs`` column of follow-up times.
    event_key
        ``obs`` column of event indicators (boolean or 0/1).
    n_groups
        Number of risk groups (at least 2).
    {ax_show_save}

    Raises
    ------
    KeyError
        If a column is missing.
    ValueError, TypeError
        For invalid times, events or risks, or ``n_groups`` below 2 or above the number of
        samples.
    """
    check_obs_key(adata, risk_key, "risk_key")
    survival = survival_data(adata, time_key, event_key)
    risk = adata.obs[risk_key]
    if not pd.api.types.is_numeric_dtype(risk) or risk.isna().any():
        msg = f"`adata.obs[{risk_key!r}]` (`risk_key`) must hold numeric risks without NaN."
        raise ValueError(msg)
    if not is_integer(n_groups) or not 2 <= n_groups <= adata.n_obs:
        msg = (
            f"`n_groups` must be an integer from 2 to the {adata.n_obs} samples, got {n_groups!r}."
        )
        raise ValueError(msg)
    groups = risk_groups(risk, n_groups)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    for name in groups.categories:
        members = np.asarray(groups == name)
        fitter = KaplanMeierFitter(label=f"{name} (n={int(members.sum())})")
        fitter.fit(survival.time[members], survival.event[members])
        fitter.plot_survival_function(ax=ax)
    pvalue = logrank_pvalue(survival.time, np.asarray(groups.codes), survival.event)
    ax.set_title(f"{risk_key}: log-rank p = {pvalue:.2g}")
    ax.set_xlabel(time_key)
    ax.set_ylabel("survival probability")
    return savefig_or_show(ax, show, save)
