"""Deletion and insertion curves of gene rankings, beside random orders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import matplotlib.pyplot as plt

from gexbert_sc.metrics._importance import RANDOM
from gexbert_sc.pl._utils import DOC_AX_SHOW_SAVE, savefig_or_show
from gexbert_sc.utils import doc_params

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from gexbert_sc.metrics import DeletionTest


@doc_params(ax_show_save=DOC_AX_SHOW_SAVE)
def deletion_curve(
    test: DeletionTest,
    group: str,
    *,
    mode: Literal["deletion", "insertion"] = "deletion",
    rankings: Sequence[str] | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Plot one group's deletion (or insertion) curves: one line per ranking, random as a band.

    A ranking whose top genes the model relies on falls below the band of random orders
    (deletion) or rises above it (insertion).

    Parameters
    ----------
    test
        The result of :func:`gexbert_sc.metrics.deletion_curve`.
    group
        The group shown.
    mode
        ``"deletion"`` (top genes read as missing) or ``"insertion"`` (only top genes read).
    rankings
        Rankings shown (default: every ranking of ``test``).
    {ax_show_save}

    Raises
    ------
    ValueError
        For an unknown ``mode``, ``group`` or ranking.
    """
    if mode not in ("deletion", "insertion"):
        msg = f"`mode` must be 'deletion' or 'insertion', got {mode!r}."
        raise ValueError(msg)
    curves = test.curves[(test.curves["group"] == group) & (test.curves["mode"] == mode)]
    if curves.empty:
        msg = (
            f"`group` {group!r} is not in the test; it has {sorted(test.curves['group'].unique())}."
        )
        raise ValueError(msg)
    shown = [r for r in curves["ranking"].unique() if r != RANDOM] if rankings is None else rankings
    unknown = [r for r in shown if r not in set(curves["ranking"])]
    if unknown:
        msg = f"`rankings` {unknown} are not in the test."
        raise ValueError(msg)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    random = curves[curves["ranking"] == RANDOM].groupby("n_genes")["score"]
    if len(random):
        low, high = random.min(), random.max()
        ax.fill_between(low.index, low, high, color="grey", alpha=0.3, label="random orders")
    for ranking in shown:
        line = curves[curves["ranking"] == ranking]
        ax.plot(line["n_genes"], line["score"], marker=".", label=ranking)
    verb = "read as missing" if mode == "deletion" else "read alone"
    ax.set_xlabel(f"top genes {verb}")
    ax.set_ylabel("mean target")
    ax.set_title(f"{group}: {mode}")
    ax.legend(fontsize=7)
    return savefig_or_show(ax, show, save)
