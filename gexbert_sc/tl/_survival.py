"""Survival writers: prognostic anchor genes into ``var``, predicted risks into ``obs``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from gexbert_sc._constants import OUTPUT_KEYS
from gexbert_sc.data._matrix import to_dense
from gexbert_sc.data._survival import survival_data
from gexbert_sc.data._validation import check_expression_matrix, registered_matrix
from gexbert_sc.metrics import cox_score_test
from gexbert_sc.model.base import check_model
from gexbert_sc.tl._provenance import prepare_target, record, warn_if_overwriting
from gexbert_sc.utils import check_positive_integers

if TYPE_CHECKING:
    from anndata import AnnData

    from gexbert_sc.model import GexBERTSurvival
    from gexbert_sc.train import Precision

logger = logging.getLogger(__name__)

#: ``var`` column suffixes of :func:`select_anchor_genes`.
PVALUE_SUFFIX, Z_SUFFIX = "_pvalue", "_z"


def select_anchor_genes(
    adata: AnnData,
    time_key: str,
    event_key: str,
    *,
    n_genes: int = 50,
    samples: Sequence[int] | np.ndarray | None = None,
    layer: str | None = None,
    key_added: str = OUTPUT_KEYS.ANCHOR,
    copy: bool = False,
) -> AnnData | None:
    """Rank genes by univariate Cox association with survival and flag the top ones.

    Each gene's association is the univariate Cox score test
    (:func:`gexbert_sc.metrics.cox_score_test`) on the samples given; the ``n_genes`` genes
    with the smallest p-values are the *anchors*, the prognostic genes a model restores for
    samples whose panel did not measure them (:func:`gexbert_sc.tl.impute` with
    ``genes=``). Pass only the training samples (``samples``), so that the anchors of a
    held-out sample were chosen without it.

    Parameters
    ----------
    adata
        AnnData with the survival columns in ``obs``.
    time_key
        ``obs`` column of follow-up times.
    event_key
        ``obs`` column of event indicators (boolean or 0/1).
    n_genes
        Number of anchors (at most the number of genes that can be tested).
    samples
        Positions (or a boolean mask) of the samples to rank on (default: all). The results
        go to ``adata.var`` whatever the samples.
    layer
        Layer of the expression values (default: ``X``), e.g. ``log1p`` of normalised
        counts. A gene with a missing (NaN) value among the samples is not ranked.
    key_added
        ``var`` column of the anchor flag and ``uns`` key of the anchor list.
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    Depending on ``copy``, returns or updates ``adata`` with the following fields.

    `adata.var['gexbert_anchor' | key_added]` : :class:`numpy.ndarray` (dtype `bool`)
        ``True`` for the anchors.
    `adata.var[key_added + '_pvalue']`, `adata.var[key_added + '_z']` : `float`
        Every gene's score-test p-value and signed statistic (positive: higher expression,
        higher hazard; NaN for genes not ranked).
    `adata.uns[key_added]` : :class:`dict`
        ``genes`` (the anchors, most significant first) and the parameters of the call.

    Raises
    ------
    KeyError, TypeError, ValueError
        For a missing column, invalid times or events among the samples, or ``n_genes``
        larger than the number of genes that can be ranked.
    """
    check_positive_integers(n_genes=n_genes)
    check_expression_matrix(adata, layer)
    rows = np.arange(adata.n_obs) if samples is None else np.arange(adata.n_obs)[samples]
    survival = survival_data(adata[rows], time_key, event_key)
    matrix = registered_matrix(adata, layer)[rows]
    values = to_dense(matrix)
    rankable = ~np.isnan(values).any(axis=0)
    test = cox_score_test(np.where(rankable, values, 0.0), survival.time, survival.event)
    pvalue = np.where(rankable, test.pvalue, np.nan)
    n_rankable = int(np.isfinite(pvalue).sum())
    if n_genes > n_rankable:
        msg = (
            f"`n_genes={n_genes}` exceeds the {n_rankable} genes that can be ranked (genes "
            "without NaN that vary among the samples)."
        )
        raise ValueError(msg)
    adata = prepare_target(adata, copy)
    order = np.argsort(np.where(np.isfinite(pvalue), pvalue, np.inf), kind="stable")[:n_genes]
    for suffix in ("", PVALUE_SUFFIX, Z_SUFFIX):
        warn_if_overwriting(adata.var, key_added + suffix, "var")
    anchor = np.zeros(adata.n_vars, dtype=bool)
    anchor[order] = True
    adata.var[key_added] = anchor
    adata.var[key_added + PVALUE_SUFFIX] = pvalue
    adata.var[key_added + Z_SUFFIX] = np.where(rankable, test.z, np.nan)
    adata.uns[key_added] = {
        "genes": list(adata.var_names[order]),
        "params": {
            "time_key": time_key,
            "event_key": event_key,
            "n_genes": n_genes,
            "layer": layer,
            "n_samples": len(rows),
            "n_events": int(survival.event.sum()),
            "method": "univariate Cox score test (Breslow ties)",
        },
    }
    logger.info("Added `var[%r]`: %d anchors of %d ranked genes.", key_added, n_genes, n_rankable)
    return adata if copy else None


def predict_risk(
    adata: AnnData,
    model: GexBERTSurvival,
    *,
    key_added: str = OUTPUT_KEYS.RISK,
    batch_size: int | None = None,
    memory_budget: int | str | None = None,
    precision: Precision = "32-true",
    copy: bool = False,
) -> AnnData | None:
    """Predict each sample's risk with a trained survival model, from the genes it has.

    Parameters
    ----------
    adata
        AnnData with the model's genes in its order; genes a panel did not measure are NaN
        (:func:`gexbert_sc.data.align_genes` builds this from a panel). Its survival
        columns, if any, are not read.
    model
        A trained :class:`~gexbert_sc.GexBERTSurvival`.
    key_added
        ``obs`` key of the risks.
    batch_size
        Samples per minibatch (does not change the result).
    memory_budget
        Instead of ``batch_size``: bytes (or ``"2GB"``) one minibatch's activations may use.
    precision
        ``"32-true"`` (default) or a reduced precision, as in
        :meth:`~gexbert_sc.GexBERT.get_latent_representation`.
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    Depending on ``copy``, returns or updates ``adata`` with the following fields.

    `adata.obs['gexbert_risk' | key_added]` : :class:`numpy.ndarray` (dtype `float`)
        The log relative hazard (higher: worse prognosis; only differences mean anything).
    `adata.uns['gexbert']['outputs'][key_added]` : :class:`dict`
        Parameters of this call and the model that made the predictions.
    """
    from gexbert_sc.model import GexBERTSurvival

    check_model(model, GexBERTSurvival)
    adata = prepare_target(adata, copy)
    risk = model.predict_risk(
        adata, batch_size=batch_size, memory_budget=memory_budget, precision=precision
    )
    warn_if_overwriting(adata.obs, key_added, "obs")
    adata.obs[key_added] = risk.to_numpy()
    params = {"batch_size": batch_size, "memory_budget": memory_budget, "precision": precision}
    record(adata, model, key_added, params)
    logger.info("Added `obs[%r]`, the GexBERT predicted risks.", key_added)
    return adata if copy else None
