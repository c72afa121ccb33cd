"""Gene alignment between a user's AnnData and a model's vocabulary."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from gexbert_sc._constants import OUTPUT_KEYS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

logger = logging.getLogger(__name__)


def check_var_names(var_names: pd.Index, model_var_names: Sequence[str]) -> None:
    """Raise unless ``var_names`` equal the model's genes, in the same order.

    Parameters
    ----------
    var_names
        Genes of the data passed to the model.
    model_var_names
        Genes the model was trained on, in the model's order.

    Raises
    ------
    ValueError
        Saying how many genes match, whether only the order differs, and how to align.
    """
    model_var_names = pd.Index(model_var_names)
    if var_names.equals(model_var_names):
        return
    n_shared = len(model_var_names.intersection(var_names))
    if n_shared == len(model_var_names) == len(var_names):
        problem = "holds the model's genes in another order"
    else:
        problem = (
            f"shares {n_shared} of the model's {len(model_var_names)} genes "
            f"({len(var_names) - n_shared} of its {len(var_names)} genes are unknown to the model)"
        )
    msg = (
        f"`adata` {problem}. Align it first with "
        "`adata = gexbert_sc.data.align_genes(adata, model)`, which reorders genes to the "
        "model's order and marks the model's genes absent from `adata` as missing (NaN)."
    )
    raise ValueError(msg)


def align_genes(adata: AnnData, model_or_var_names) -> AnnData:
    """Return a copy of ``adata`` whose genes are exactly the model's, in the model's order.

    Genes the model does not know are dropped; model genes absent from ``adata`` are added as
    *missing* values (NaN, stored explicitly for sparse matrices), never as zeros. The overlap
    is logged and recorded in ``uns["gexbert_alignment"]``.

    Parameters
    ----------
    adata
        Data to align. Its ``X`` and layers are aligned; ``obsm``/``obs`` are kept.
    model_or_var_names
        A trained :class:`~gexbert_sc.GexBERT` (its training genes are used) or a sequence of
        gene names.

    Returns
    -------
    The aligned :class:`~anndata.AnnData`.

    Raises
    ------
    ValueError
        If ``adata`` shares no gene with the model or has duplicated gene names.

    Examples
    --------
    >>> import gexbert_sc
    >>> panel = gexbert_sc.datasets.pbmc68k()[:, :64]
    >>> aligned = gexbert_sc.data.align_genes(panel, list(panel.var_names[::-1]))
    >>> aligned.var_names[0] == panel.var_names[-1]
    True
    """
    if hasattr(model_or_var_names, "var_names"):
        target = pd.Index(model_or_var_names.var_names)
    else:
        target = pd.Index(model_or_var_names)
    if not adata.var_names.is_unique:
        msg = "`adata.var_names` must be unique; run `adata.var_names_make_unique()` first."
        raise ValueError(msg)
    positions = adata.var_names.get_indexer(target)
    present = positions >= 0
    n_shared = int(present.sum())
    if n_shared == 0:
        msg = (
            f"`adata` shares no gene with the model's {len(target)} genes "
            f"(first model genes: {list(target[:3])}, first data genes: "
            f"{list(adata.var_names[:3])}); check that both use the same identifiers."
        )
        raise ValueError(msg)
    logger.info(
        "Aligned genes: %d of the model's %d genes found; %d marked missing; %d dropped.",
        n_shared,
        len(target),
        len(target) - n_shared,
        adata.n_vars - n_shared,
    )
    aligned = ad.AnnData(
        X=None if adata.X is None else _take_columns(adata.X, positions),
        obs=adata.obs.copy(),
        var=pd.DataFrame(index=target),
        obsm=dict(adata.obsm),
        uns=dict(adata.uns),
        layers={k: _take_columns(v, positions) for k, v in adata.layers.items()},
    )
    aligned.uns[OUTPUT_KEYS.ALIGNMENT_UNS] = {
        "n_model_genes": len(target),
        "n_shared": n_shared,
        "n_dropped": adata.n_vars - n_shared,
        "missing_genes": list(target[~present]),
    }
    return aligned


def _take_columns(matrix, positions: np.ndarray):
    """Columns at ``positions`` (``-1`` → a column of NaN, or of ``True`` for masks).

    Values keep their precision (float64 stays float64, sparse or dense); integers become
    floats, to hold NaN.
    """
    is_mask = np.dtype(matrix.dtype) == np.bool_
    fill = True if is_mask else np.nan
    dtype = np.bool_ if is_mask else np.result_type(matrix.dtype, np.float32)
    present = positions >= 0
    n_obs, n_missing = matrix.shape[0], int((~present).sum())
    if sp.issparse(matrix):
        blocks = [sp.csc_matrix(matrix)[:, positions[present]].astype(dtype)]
        blocks.append(sp.csc_matrix(np.full((n_obs, n_missing), fill, dtype=dtype)))
        combined = sp.hstack(blocks, format="csc")
        order = np.empty(len(positions), dtype=int)
        order[present] = np.arange(present.sum())
        order[~present] = present.sum() + np.arange(n_missing)
        return sp.csr_matrix(combined[:, order])
    taken = np.asarray(matrix)[:, np.where(present, positions, 0)].astype(dtype)
    taken[:, ~present] = fill
    return taken
