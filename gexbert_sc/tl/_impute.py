"""Write values restored by GexBERT into ``layers``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from gexbert_sc._constants import OUTPUT_KEYS
from gexbert_sc.data._matrix import dense_rows, iter_row_blocks, registered_values
from gexbert_sc.tl._provenance import check_model, record, warn_if_overwriting

if TYPE_CHECKING:
    from anndata import AnnData

    from gexbert_sc.model import GexBERT

logger = logging.getLogger(__name__)


def _missing_mask(adata: AnnData, model: GexBERT) -> sp.csr_matrix:
    """Sparse boolean mask of the entries the model treats as missing (NaN or mask layer)."""
    values, flags = registered_values(model.get_anndata_manager(adata, required=True))
    blocks = []
    for rows, block in iter_row_blocks(values):
        missing = np.isnan(block)
        if flags is not None:
            missing |= dense_rows(flags, rows) > 0.5
        blocks.append(sp.csr_matrix(missing))
    return sp.vstack(blocks, format="csr")


def impute(
    adata: AnnData,
    model: GexBERT,
    *,
    key_added: str = OUTPUT_KEYS.IMPUTED,
    keep_observed: bool = True,
    batch_size: int | None = None,
    query_chunk_size: int = 1024,
    copy: bool = False,
) -> AnnData | None:
    """Fill missing entries (or restore all entries) with a trained model.

    Parameters
    ----------
    adata
        AnnData with the model's genes, in the model's order. Missing entries are NaN (or
        flagged in the ``missing_layer`` given to ``setup_anndata``).
    model
        A trained :class:`~gexbert_sc.GexBERT`.
    key_added
        Layer receiving the values; ``f"{key_added}_mask"`` receives the imputed entries.
    keep_observed
        Keep observed values and fill only missing entries (``True``), or write the model's
        restoration for every entry (``False``).
    batch_size
        Samples per minibatch.
    query_chunk_size
        Genes restored at once (bounds memory, does not change the result).
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    Depending on ``copy``, returns or updates ``adata`` with the following fields.

    `adata.layers['gexbert_imputed' | key_added]` : :class:`numpy.ndarray` (dtype `float32`)
        Values on the input scale (counts in → expected counts out; log in → log out).
    `adata.layers[key_added + '_mask']` : :class:`scipy.sparse.csr_matrix` (dtype `bool`)
        ``True`` where the value was imputed (was missing in the input).
    `adata.uns['gexbert']['outputs'][key_added]` : :class:`dict`
        Parameters of this call and the number of imputed entries.

    Examples
    --------
    >>> import numpy as np, gexbert_sc
    >>> adata = gexbert_sc.datasets.pbmc68k()
    >>> adata.X[np.random.default_rng(0).random(adata.shape) < 0.3] = np.nan
    >>> gexbert_sc.GexBERT.setup_anndata(adata)
    >>> model = gexbert_sc.GexBERT(adata, d_model=32)
    >>> model.train(max_epochs=1)
    >>> gexbert_sc.tl.impute(adata, model)
    >>> bool(np.isnan(adata.layers["gexbert_imputed"]).any())
    False
    """
    check_model(model)
    values = model.get_imputed_expression(
        adata,
        keep_observed=keep_observed,
        batch_size=batch_size,
        query_chunk_size=query_chunk_size,
        return_numpy=True,
    )
    imputed = _missing_mask(adata if adata is not None else model.adata, model)
    adata = adata.copy() if copy else adata
    warn_if_overwriting(adata.layers, key_added, "layers")
    adata.layers[key_added] = values
    adata.layers[f"{key_added}_mask"] = imputed
    params = {
        "keep_observed": keep_observed,
        "batch_size": batch_size,
        "query_chunk_size": query_chunk_size,
        "n_imputed": int(imputed.nnz),
    }
    record(adata, model, key_added, params)
    logger.info(
        "Added `layers[%r]` (%d entries imputed) and `layers[%r]`.",
        key_added,
        imputed.nnz,
        f"{key_added}_mask",
    )
    return adata if copy else None
