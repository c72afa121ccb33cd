"""Write the GexBERT sample embedding into ``obsm``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gexbert_sc._constants import OUTPUT_KEYS
from gexbert_sc.model.base import check_model
from gexbert_sc.tl._provenance import prepare_target, record, warn_if_overwriting

if TYPE_CHECKING:
    from anndata import AnnData

    from gexbert_sc.model import GexBERT
    from gexbert_sc.train import Precision

logger = logging.getLogger(__name__)


def embed(
    adata: AnnData,
    model: GexBERT,
    *,
    key_added: str = OUTPUT_KEYS.EMBEDDING,
    batch_size: int | None = None,
    memory_budget: int | str | None = None,
    precision: Precision = "32-true",
    copy: bool = False,
) -> AnnData | None:
    """Embed samples with a trained model.

    Parameters
    ----------
    adata
        AnnData with the model's genes, in the model's order, or a MuData set up with
        :meth:`~gexbert_sc.GexBERT.setup_mudata` (the embedding goes to ``mdata.obsm``).
    model
        A trained :class:`~gexbert_sc.GexBERT`.
    key_added
        ``obsm`` key of the embedding; the default ``"X_gexbert"`` makes
        ``sc.pp.neighbors(adata, use_rep="X_gexbert")`` and ``basis="gexbert"`` work.
    batch_size
        Samples per minibatch (does not change the result).
    memory_budget
        Instead of ``batch_size``: bytes (or ``"2GB"``, ``"1.5GiB"``) that one minibatch's
        activations may use (see :meth:`~gexbert_sc.GexBERT.get_latent_representation`).
    precision
        ``"32-true"`` (default) or a reduced precision, as in
        :meth:`~gexbert_sc.GexBERT.get_latent_representation`.
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    Depending on ``copy``, returns or updates ``adata`` with the following fields.

    `adata.obsm['X_gexbert' | key_added]` : :class:`numpy.ndarray` (dtype `float32`)
        The ``[CLS]`` sample embedding.
    `adata.uns['gexbert']['outputs'][key_added]` : :class:`dict`
        Parameters of this call and the model that made the embedding.

    Examples
    --------
    >>> import gexbert_sc, scanpy as sc
    >>> adata = gexbert_sc.datasets.pbmc68k()
    >>> gexbert_sc.GexBERT.setup_anndata(adata)
    >>> model = gexbert_sc.GexBERT(adata, d_model=32)
    >>> model.train(max_epochs=1)
    >>> gexbert_sc.tl.embed(adata, model)
    >>> sc.pp.neighbors(adata, use_rep="X_gexbert")
    """
    check_model(model)
    adata = prepare_target(adata, copy)
    embedding = model.get_latent_representation(
        adata, batch_size=batch_size, memory_budget=memory_budget, precision=precision
    )
    warn_if_overwriting(adata.obsm, key_added, "obsm")
    adata.obsm[key_added] = embedding
    params = {"batch_size": batch_size, "memory_budget": memory_budget, "precision": precision}
    record(adata, model, key_added, params)
    logger.info("Added `obsm[%r]`, the GexBERT sample embedding.", key_added)
    return adata if copy else None
