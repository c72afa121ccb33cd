"""Gene embeddings into ``varm``, and a gene's nearest genes in the embedding."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from gexbert_sc._constants import OUTPUT_KEYS
from gexbert_sc.model.base import check_model
from gexbert_sc.tl._provenance import prepare_target, record, warn_if_overwriting
from gexbert_sc.utils import check_positive_integers

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

    from gexbert_sc.model import GexBERTBase

logger = logging.getLogger(__name__)


def gene_embedding(
    adata: AnnData | MuData,
    model: GexBERTBase,
    *,
    key_added: str = OUTPUT_KEYS.GENE_EMBEDDING,
    copy: bool = False,
) -> AnnData | MuData | None:
    """Write the model's learned gene identity embeddings into ``varm``.

    Parameters
    ----------
    adata
        AnnData (or MuData set up with ``setup_mudata``: its expression modality) whose genes
        get the embedding; genes the model does not know get NaN rows.
    model
        A trained model of the GexBERT family.
    key_added
        ``varm`` key.
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    Depending on ``copy``, returns or updates ``adata`` with the following fields.

    `adata.varm['gexbert_gene_embedding' | key_added]` : :class:`numpy.ndarray` (dtype `float32`)
        ``n_vars × d_model`` gene embeddings (see :meth:`~gexbert_sc.GexBERT.get_gene_embeddings`).
    `adata.uns['gexbert']['outputs'][key_added]` : :class:`dict`
        The model that made them.
    """
    check_model(model)
    adata = prepare_target(adata, copy)
    expression = model.expression_of(adata)
    embeddings = model.get_gene_embeddings().reindex(expression.var_names)
    n_unknown = int(embeddings.isna().all(axis=1).sum())
    if n_unknown:
        logger.warning("%d genes unknown to the model get NaN embeddings.", n_unknown)
    warn_if_overwriting(expression.varm, key_added, "varm")
    expression.varm[key_added] = embeddings.to_numpy(dtype=np.float32)
    record(adata, model, key_added, {"n_unknown_genes": n_unknown})
    logger.info("Added `varm[%r]`, the GexBERT gene embeddings.", key_added)
    return adata if copy else None


def gene_similarity(model: GexBERTBase, genes: str | Sequence[str], *, n: int = 10) -> pd.DataFrame:
    """Find the genes nearest to each of ``genes`` by cosine similarity of their embeddings.

    Genes that the model learned to use alike end up close: a co-expression view of the
    vocabulary, not a statement about regulation.

    Parameters
    ----------
    model
        A trained model of the GexBERT family.
    genes
        A gene or genes of the model's vocabulary.
    n
        Neighbours per gene (the gene itself excluded).

    Returns
    -------
    A tidy DataFrame: ``gene``, ``neighbour``, ``similarity`` (cosine), ``rank`` (1 =
    nearest).

    Raises
    ------
    KeyError
        If a gene is not in the model's vocabulary.
    ValueError
        If ``n`` is not a positive integer below the vocabulary size.
    """
    check_model(model)
    genes = [genes] if isinstance(genes, str) else list(genes)
    positions = model._gene_indices(genes)
    check_positive_integers(n=n)
    n_vars = len(model.var_names)
    if n >= n_vars:
        msg = f"`n` must be below the model's {n_vars} genes, got {n}."
        raise ValueError(msg)
    weights = model.get_gene_embeddings().to_numpy(dtype=np.float64)
    unit = weights / np.linalg.norm(weights, axis=1, keepdims=True).clip(min=1e-12)
    similarity = unit[positions] @ unit.T
    similarity[np.arange(len(positions)), positions] = -np.inf
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :n]
    return pd.DataFrame(
        {
            "gene": np.repeat(genes, n),
            "neighbour": np.asarray(model.var_names)[nearest].ravel(),
            "similarity": np.take_along_axis(similarity, nearest, axis=1).ravel(),
            "rank": np.tile(np.arange(1, n + 1), len(genes)),
        }
    )
