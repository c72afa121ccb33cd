"""Rank genes per group by a model's gene importance, in the layout of ``rank_genes_groups``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from gexbert_sc._constants import OUTPUT_KEYS
from gexbert_sc.data._rankings import GEXBERT_METHOD_PREFIX, rankings_uns
from gexbert_sc.model.base import check_model
from gexbert_sc.model.base._importance import ATTENTION_METHODS
from gexbert_sc.tl._provenance import prepare_target, record, warn_if_overwriting

if TYPE_CHECKING:
    from anndata import AnnData

    from gexbert_sc.model import GexBERTBase
    from gexbert_sc.model.base import ImportanceMethod

logger = logging.getLogger(__name__)


def rank_genes_importance(
    adata: AnnData,
    model: GexBERTBase,
    groupby: str,
    *,
    method: ImportanceMethod = "integrated_gradients",
    target: str | None = None,
    max_samples: int | None = 500,
    n_steps: int = 16,
    prior: float = 10.0,
    key_added: str = OUTPUT_KEYS.RANK_IMPORTANCE,
    batch_size: int | None = None,
    seed: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Rank genes per group by how much more the model's output owes to them there than elsewhere.

    A gene's score in a group is its mean importance for the group's samples minus its mean
    importance for the other samples (:meth:`~gexbert_sc.GexBERT.get_gene_importance` with
    ``versus_rest=True``), so that genes every prediction reads rank low. The result has the
    layout of :func:`scanpy.tl.rank_genes_groups`: :func:`scanpy.get.rank_genes_groups_df`,
    ``sc.pl.rank_genes_groups_dotplot`` / ``_heatmap`` (with ``key=key_added``),
    :func:`gexbert_sc.metrics.ranking_overlap` and :func:`gexbert_sc.metrics.deletion_curve`
    read it. Which method to trust, and what each costs, is measured in
    :doc:`/interpretability`.

    Parameters
    ----------
    adata
        AnnData with the model's genes and the ``groupby`` column.
    model
        A trained model of the GexBERT family (a fine-tuned
        :class:`~gexbert_sc.GexBERTClassifier` explains its predictions).
    groupby
        ``obs`` column of the groups (at least two).
    method, target, max_samples, n_steps, prior, batch_size, seed
        As in :meth:`~gexbert_sc.GexBERT.get_gene_importance`.
    key_added
        ``uns`` key of the result.
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    Depending on ``copy``, returns or updates ``adata`` with the following fields.

    `adata.uns['rank_genes_gexbert' | key_added]` : :class:`dict`
        ``names`` and ``scores`` (the group's importance minus the rest's, in the method's
        units: log-odds for a classifier's integrated gradients and deletion),
        ``logfoldchanges`` (for the attention methods, log2 of the group's attention over
        the rest's; NaN for the others), ``pvals`` and ``pvals_adj`` (NaN: no test),
        ``pts`` / ``pts_rest`` (the share of the group's / the other samples that measured
        the gene non-zero; for attention, that held it in context), and ``params``.
    `adata.uns['gexbert']['outputs'][key_added]` : :class:`dict`
        Parameters of this call and the model.
    """
    check_model(model)
    adata = prepare_target(adata, copy)
    table = model.get_gene_importance(
        adata,
        groupby,
        method=method,
        target=target,
        versus_rest=True,
        max_samples=max_samples,
        n_steps=n_steps,
        prior=prior,
        batch_size=batch_size,
        seed=seed,
    )
    table = ranking_columns(table, method)
    params = {
        "importance": method,
        "target": table.attrs.get("target"),
        "max_samples": max_samples,
        "n_steps": n_steps if method == "integrated_gradients" else None,
        "prior": prior if method in ATTENTION_METHODS else None,
        "seed": seed,
    }
    warn_if_overwriting(adata.uns, key_added, "uns")
    adata.uns[key_added] = rankings_uns(table, groupby, GEXBERT_METHOD_PREFIX + method, params)
    record(adata, model, key_added, params)
    logger.info(
        "Added `uns[%r]`: %s rankings of %d groups.",
        key_added,
        method,
        len(table["group"].cat.categories),
    )
    return adata if copy else None


def ranking_columns(table: pd.DataFrame, method: ImportanceMethod) -> pd.DataFrame:
    """Add the ``rank_genes_groups`` columns a ``versus_rest`` importance table lacks.

    Parameters
    ----------
    table
        :meth:`~gexbert_sc.GexBERT.get_gene_importance` with ``versus_rest=True``.
    method
        Its method.

    Returns
    -------
    ``table`` with ``logfoldchange`` (log2 of the group's attention over the rest's for the
    attention methods, NaN for the others), ``pts`` and ``pts_rest`` (context or expressed
    fractions), as :func:`gexbert_sc.data._rankings.rankings_uns` reads them.
    """
    if method in ATTENTION_METHODS:
        return table.assign(
            logfoldchange=np.log2(table["group_score"] / table["rest_score"]),
            pts=table["context_fraction"],
            pts_rest=table["rest_context_fraction"],
        )
    return table.assign(
        logfoldchange=np.nan,
        pts=table["expressed_fraction"],
        pts_rest=table["rest_expressed_fraction"],
    )
