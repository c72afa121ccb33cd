"""Attention rankings per group, drawn as a genes × groups matrix of scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gexbert_sc._constants import OUTPUT_KEYS
from gexbert_sc.data._rankings import ranked_names
from gexbert_sc.data._validation import require_output
from gexbert_sc.pl._utils import DOC_AX_SHOW_SAVE, savefig_or_show
from gexbert_sc.utils import check_positive_integers, doc_params

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes


@doc_params(ax_show_save=DOC_AX_SHOW_SAVE)
def rank_genes_attention(
    adata: AnnData,
    key: str = OUTPUT_KEYS.RANK_ATTENTION,
    *,
    groups: Sequence[str] | None = None,
    n_genes: int = 5,
    cmap: str = "RdBu_r",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Each group's top genes by attention, with their scores in every group.

    Rows are the groups, columns the ``n_genes`` top genes of each group in turn (a gene
    shown once); the colour is the group-specific score of
    :func:`gexbert_sc.tl.rank_genes_attention` (0: as much attention as elsewhere). Any
    ranking in the layout of :func:`scanpy.tl.rank_genes_groups` can be drawn.

    Parameters
    ----------
    adata
        AnnData holding the ranking in ``uns[key]``.
    key
        ``uns`` key of the ranking.
    groups
        Groups to show (default: all).
    n_genes
        Top genes taken from each group.
    cmap
        Colour map of the scores (centred on 0).
    {ax_show_save}

    Raises
    ------
    KeyError
        If the ranking or a group is missing (the message says what to run first).
    """
    ranking = require_output(adata.uns, key, "uns", "gexbert_sc.tl.rank_genes_attention")
    check_positive_integers(n_genes=n_genes)
    groups = list(ranking["names"].dtype.names if groups is None else groups)
    genes = list(
        dict.fromkeys(g for group in groups for g in ranked_names(ranking, group, n_genes))
    )
    scores = pd.DataFrame(
        {
            group: pd.Series(ranking["scores"][group], index=ranked_names(ranking, group)).reindex(
                genes
            )
            for group in groups
        }
    ).T
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.3 * len(genes) + 2), 0.4 * len(groups) + 1.5))
    limit = float(np.nanmax(np.abs(scores.to_numpy()))) or 1.0
    image = ax.imshow(scores.to_numpy(), cmap=cmap, vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(genes)), genes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(groups)), groups, fontsize=8)
    ax.figure.colorbar(image, ax=ax, label="score", shrink=0.8)
    ax.set_title(f"top {n_genes} genes per group ({key})")
    return savefig_or_show(ax, show, save)
