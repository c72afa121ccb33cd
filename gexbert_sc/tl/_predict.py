"""Write a GexBERTClassifier's predictions into ``obs`` and ``obsm``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import pandas as pd

from gexbert_sc._constants import OUTPUT_KEYS
from gexbert_sc.model.base import check_model
from gexbert_sc.tl._provenance import prepare_target, record, warn_if_overwriting

if TYPE_CHECKING:
    from anndata import AnnData

    from gexbert_sc.model import GexBERTClassifier
    from gexbert_sc.train import Precision

logger = logging.getLogger(__name__)


def predict(
    adata: AnnData,
    model: GexBERTClassifier,
    *,
    key_added: str = OUTPUT_KEYS.PREDICTION,
    batch_size: int | None = None,
    memory_budget: int | str | None = None,
    precision: Precision = "32-true",
    panel_adapted: Literal["auto"] | bool = "auto",
    copy: bool = False,
) -> AnnData | None:
    """Predict each sample's class with a trained classifier, from the genes it has.

    Parameters
    ----------
    adata
        AnnData with the model's genes in its order; genes a panel did not measure are NaN
        (:func:`gexbert_sc.data.align_genes` builds this from a panel). Its labels column,
        if any, is not read.
    model
        A trained :class:`~gexbert_sc.GexBERTClassifier`.
    key_added
        ``obs`` key of the predicted classes; the confidence and the probabilities go to
        ``obs[key_added + "_confidence"]`` and ``obsm[key_added + "_proba"]``.
    batch_size
        Samples per minibatch (does not change the result).
    memory_budget
        Instead of ``batch_size``: bytes (or ``"2GB"``) one minibatch's activations may use.
    precision
        ``"32-true"`` (default) or a reduced precision, as in
        :meth:`~gexbert_sc.GexBERT.get_latent_representation`.
    panel_adapted
        Predict samples that lack some of the model's genes with a head refitted on the
        training data read through their panel (``"auto"``, ``True``) or with the trained head
        (``False``); as in :meth:`~gexbert_sc.GexBERTClassifier.predict`.
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    Depending on ``copy``, returns or updates ``adata`` with the following fields.

    `adata.obs['gexbert_prediction' | key_added]` : :class:`pandas.Categorical`
        The most probable class (categories: the model's classes).
    `adata.obs['gexbert_prediction_confidence']` : :class:`numpy.ndarray` (dtype `float`)
        Its probability.
    `adata.obsm['gexbert_prediction_proba']` : :class:`pandas.DataFrame`
        The probability of every class (classes as columns; rows sum to 1).
    `adata.uns['gexbert']['outputs'][key_added]` : :class:`dict`
        Parameters of this call and the model that made the predictions.

    Examples
    --------
    >>> import gexbert_sc
    >>> adata = gexbert_sc.datasets.pbmc68k()
    >>> gexbert_sc.GexBERT.setup_anndata(adata, labels_key="bulk_labels")
    >>> model = gexbert_sc.GexBERT(adata, d_model=32)
    >>> model.train(max_epochs=1)
    >>> classifier = gexbert_sc.GexBERTClassifier.from_gexbert_model(model)
    >>> classifier.train(max_epochs=1)
    >>> gexbert_sc.tl.predict(adata, classifier)
    >>> adata.obsm["gexbert_prediction_proba"].shape
    (700, 10)
    """
    from gexbert_sc.model import GexBERTClassifier

    check_model(model, GexBERTClassifier)
    adata = prepare_target(adata, copy)
    proba = model.predict(
        adata,
        soft=True,
        batch_size=batch_size,
        panel_adapted=panel_adapted,
        memory_budget=memory_budget,
        precision=precision,
    )
    confidence_key = key_added + OUTPUT_KEYS.CONFIDENCE_SUFFIX
    proba_key = key_added + OUTPUT_KEYS.PROBA_SUFFIX
    for key in (key_added, confidence_key):
        warn_if_overwriting(adata.obs, key, "obs")
    warn_if_overwriting(adata.obsm, proba_key, "obsm")
    best = proba.to_numpy().argmax(axis=1)
    adata.obs[key_added] = pd.Categorical(proba.columns[best], categories=proba.columns)
    adata.obs[confidence_key] = proba.to_numpy().max(axis=1)
    adata.obsm[proba_key] = proba
    params = {
        "batch_size": batch_size,
        "memory_budget": memory_budget,
        "precision": precision,
        "panel_adapted": panel_adapted,
    }
    record(adata, model, key_added, params)
    logger.info(
        "Added `obs[%r]`, `obs[%r]` and `obsm[%r]`, the GexBERT class predictions.",
        key_added,
        confidence_key,
        proba_key,
    )
    return adata if copy else None
