"""Rank genes per group by attention (an alias of rank_genes_importance) and by mean expression."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gexbert_sc._constants import OUTPUT_KEYS
from gexbert_sc.data._rankings import MEAN_METHOD, rankings_uns
from gexbert_sc.data._validation import check_expression_matrix, check_obs_key, registered_matrix
from gexbert_sc.model.base._importance import ATTENTION_METHODS
from gexbert_sc.tl._importance import rank_genes_importance
from gexbert_sc.tl._provenance import prepare_target, warn_if_overwriting

if TYPE_CHECKING:
    from anndata import AnnData

    from gexbert_sc.model import GexBERTBase
    from gexbert_sc.model.base import AttentionMethod

logger = logging.getLogger(__name__)

#: Added to both means of a log fold change, so that a zero mean gives a finite value.
FOLD_CHANGE_OFFSET = 1e-9


def rank_genes_attention(
    adata: AnnData,
    model: GexBERTBase,
    groupby: str,
    *,
    method: AttentionMethod = "last",
    prior: float = 10.0,
    key_added: str = OUTPUT_KEYS.RANK_ATTENTION,
    batch_size: int | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Rank genes per group by how much more ``[CLS]`` attention they get there than elsewhere.

    The attention case of :func:`gexbert_sc.tl.rank_genes_importance` (kept under this name):
    the group-specific score of a gene is its ``[CLS]`` attention score in the group minus
    its score in the samples of the other groups
    (:meth:`~gexbert_sc.GexBERT.get_attention_scores` with ``versus_rest=True``), read on
    every sample. Attention says what the model reads, not what its output owes to a gene:
    :doc:`/interpretability` measures how little it says on its own; prefer
    :func:`~gexbert_sc.tl.rank_genes_importance` on a fine-tuned classifier.

    Parameters
    ----------
    adata
        AnnData with the model's genes and the ``groupby`` column.
    model
        A trained model of the GexBERT family.
    groupby
        ``obs`` column of the groups (at least two).
    method
        ``"last"``, ``"mean"`` or ``"rollout"`` (see
        :func:`gexbert_sc.model.base._attention.cls_gene_attention`).
    prior
        Pseudo-samples of uniform attention each mean is shrunk with.
    key_added
        ``uns`` key of the result.
    batch_size
        Samples per minibatch (does not change the result).
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    Depending on ``copy``, returns or updates ``adata`` with the following fields.

    `adata.uns['rank_genes_attention' | key_added]` : :class:`dict`
        ``names`` and ``scores`` (the group-specific score, in relative attention units: 1 is
        a uniform share), ``logfoldchanges`` (log2 of the group's score over the rest's),
        ``pvals`` and ``pvals_adj`` (NaN: attention has no test), ``pts`` / ``pts_rest``
        (the share of the group's / the other samples' contexts that held the gene), and
        ``params``.
    `adata.uns['gexbert']['outputs'][key_added]` : :class:`dict`
        Parameters of this call and the model.
    """
    methods = {blocks: name for name, blocks in ATTENTION_METHODS.items()}
    if method not in methods:
        msg = f"`method` must be one of {tuple(methods)}, got {method!r}."
        raise ValueError(msg)
    return rank_genes_importance(
        adata,
        model,
        groupby,
        method=methods[method],
        max_samples=None,
        prior=prior,
        key_added=key_added,
        batch_size=batch_size,
        copy=copy,
    )


def rank_genes_mean(
    adata: AnnData,
    groupby: str,
    *,
    layer: str | None = None,
    key_added: str = OUTPUT_KEYS.RANK_MEAN,
    copy: bool = False,
) -> AnnData | None:
    """Rank genes per group by their mean expression there: the trivial baseline of rankings.

    Attention in expression models often re-encodes how highly a gene is expressed; comparing
    an attention ranking with this one (:func:`gexbert_sc.metrics.ranking_overlap`) tells how
    much more it says. Missing (NaN) values are left out of the means.

    Parameters
    ----------
    adata
        AnnData with the ``groupby`` column.
    groupby
        ``obs`` column of the groups (at least two).
    layer
        Layer of the values (default ``X``), e.g. log-normalised expression.
    key_added
        ``uns`` key of the result.
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    Depending on ``copy``, returns or updates ``adata`` with the following fields.

    `adata.uns['rank_genes_mean' | key_added]` : :class:`dict`
        In the layout of :func:`scanpy.tl.rank_genes_groups`: ``scores`` (the group's mean),
        ``logfoldchanges`` (log2 of the group's mean over the other samples' mean, for
        non-negative values), ``pvals`` / ``pvals_adj`` (NaN), ``pts`` / ``pts_rest`` (share
        of non-zero values).

    Raises
    ------
    KeyError, TypeError, ValueError
        For a missing column or layer, non-numeric values, or fewer than two groups.
    """
    check_obs_key(adata, groupby, "groupby")
    check_expression_matrix(adata, layer)
    labels = pd.Categorical(adata.obs[groupby]).remove_unused_categories()
    if labels.isna().any() or len(labels.categories) < 2:
        msg = (
            f"`adata.obs[{groupby!r}]` (`groupby`) needs at least two groups and no missing "
            f"values; found {len(labels.categories)} groups and {int(labels.isna().sum())} "
            "missing values."
        )
        raise ValueError(msg)
    matrix = registered_matrix(adata, layer)
    groups = np.asarray(labels.categories.astype(str))
    frames = []
    for code, name in enumerate(groups):
        inside = labels.codes == code
        (mean, nonzero), (rest_mean, rest_nonzero) = (
            _mean_and_nonzero_share(matrix, rows) for rows in (inside, ~inside)
        )
        frame = pd.DataFrame(
            {
                "group": name,
                "gene": np.asarray(adata.var_names),
                "score": mean,
                "logfoldchange": np.log2(
                    (mean + FOLD_CHANGE_OFFSET) / (rest_mean + FOLD_CHANGE_OFFSET)
                ),
                "pts": nonzero,
                "pts_rest": rest_nonzero,
            }
        )
        frame["rank"] = frame["score"].rank(ascending=False, method="first", na_option="bottom")
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table["group"] = pd.Categorical(table["group"], categories=groups)
    adata = prepare_target(adata, copy)
    warn_if_overwriting(adata.uns, key_added, "uns")
    adata.uns[key_added] = rankings_uns(table, groupby, MEAN_METHOD, {"layer": layer})
    logger.info("Added `uns[%r]`: mean-expression rankings of %d groups.", key_added, len(groups))
    return adata if copy else None


def _mean_and_nonzero_share(matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean (NaN left out) and share of non-zero values of ``matrix[rows]``."""
    part = matrix[rows]
    if sp.issparse(part):
        return np.asarray(part.mean(0)).ravel(), np.asarray((part != 0).mean(0)).ravel()
    part = np.asarray(part, dtype=np.float64)
    return np.nanmean(part, 0), (part != 0).mean(0)
