"""Reliability curves of calibrated intervals: nominal against empirical coverage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt

from gexbert_sc.pl._utils import DOC_AX_SHOW_SAVE, savefig_or_show
from gexbert_sc.utils import doc_params

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

#: Columns :func:`calibration` reads from its table.
CURVE_COLUMNS = ("missingness", "nominal", "empirical")


@doc_params(ax_show_save=DOC_AX_SHOW_SAVE)
def calibration(
    curve: pd.DataFrame,
    *,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Plot empirical against nominal coverage of the intervals, one line per missingness.

    Points on the diagonal are calibrated; below it, the intervals hold the true value less
    often than they promise (too narrow); above it, more often (wider than needed).

    Parameters
    ----------
    curve
        The table of :func:`gexbert_sc.metrics.calibration_curve` (columns ``missingness``,
        ``nominal``, ``empirical``).
    {ax_show_save}

    Raises
    ------
    ValueError
        If ``curve`` lacks a column or has no rows.

    Examples
    --------
    >>> curve = gexbert_sc.metrics.calibration_curve(model, held_out)  # doctest: +SKIP
    >>> gexbert_sc.pl.calibration(curve)  # doctest: +SKIP
    """
    missing = [c for c in CURVE_COLUMNS if c not in getattr(curve, "columns", ())]
    if missing or len(curve) == 0:
        msg = (
            "`curve` must be the non-empty table of `gexbert_sc.metrics.calibration_curve` "
            f"(columns {list(CURVE_COLUMNS)}); missing columns: {missing}, rows: {len(curve)}."
        )
        raise ValueError(msg)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    for name, rows in curve.groupby("missingness", sort=False):
        rows = rows.sort_values("nominal")
        ax.plot(rows["nominal"], rows["empirical"], marker="o", markersize=3, label=name)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":", label="calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("empirical coverage")
    ax.legend(fontsize=7, loc="upper left")
    return savefig_or_show(ax, show, save)
