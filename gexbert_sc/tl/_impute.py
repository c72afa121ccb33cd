"""Write values restored by GexBERT into ``layers``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from gexbert_sc._constants import OUTPUT_KEYS, QUERY_CHUNK_SIZE
from gexbert_sc.data._columns import is_sparse_like, take_columns
from gexbert_sc.data._validation import measured_matrix, registered_matrix
from gexbert_sc.model.base import check_model
from gexbert_sc.tl._provenance import prepare_target, record, warn_if_overwriting

if TYPE_CHECKING:
    from anndata import AnnData

    from gexbert_sc.model import GexBERT
    from gexbert_sc.train import Precision

logger = logging.getLogger(__name__)


def impute(
    adata: AnnData,
    model: GexBERT,
    *,
    genes: Sequence[str] | None = None,
    key_added: str = OUTPUT_KEYS.IMPUTED,
    keep_observed: bool = True,
    batch_size: int | None = None,
    query_chunk_size: int = QUERY_CHUNK_SIZE,
    memory_budget: int | str | None = None,
    n_samples: int | None = None,
    seed: int = 0,
    precision: Precision = "32-true",
    reference_blend: bool = True,
    coverage: float | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Fill missing entries (or restore all entries) with a trained model.

    Values are restored from each sample's observed genes by the deterministic inference path
    (the result does not depend on ``batch_size`` or ``query_chunk_size``). The data are read
    and the outputs written one minibatch at a time, with genes restored
    ``query_chunk_size`` at a time, so memory beyond the written layers is bounded by the
    minibatch.

    Parameters
    ----------
    adata
        AnnData with the model's genes, in the model's order. Missing entries are NaN (or
        flagged in the ``missing_layer`` given to ``setup_anndata``). A MuData set up with
        :meth:`~gexbert_sc.GexBERT.setup_mudata` gets the layers in its expression modality.
    model
        A trained :class:`~gexbert_sc.GexBERT`.
    genes
        Restore only these genes (e.g. the prognostic anchors of
        :func:`gexbert_sc.tl.select_anchor_genes`); the layer's other genes hold the input
        values, NaN where missing, and are never imputed. Default: every gene.
    key_added
        Layer receiving the values; ``f"{key_added}_mask"`` receives the imputed entries.
    keep_observed
        Keep observed values and fill only missing entries (``True``), or write the model's
        restoration for every entry (``False``).
    batch_size
        Samples per minibatch.
    query_chunk_size
        Genes restored at once (bounds memory, does not change the result).
    memory_budget
        Instead of ``batch_size``: bytes (or ``"2GB"``, ``"1.5GiB"``) that one minibatch's
        activations may use (see :meth:`~gexbert_sc.GexBERT.get_imputed_expression`).
    n_samples
        If given (at least 2), also restore every sample from ``n_samples`` random contexts,
        drawn as in training (random observed genes, some of them hidden), and write the
        standard deviation of these restorations to ``f"{key_added}_std"``. It measures how
        much a value depends on which observed genes the model reads: it is **not** a
        calibrated posterior or prediction interval, and it ignores the noise of the
        measurement itself. Costs ``n_samples`` extra passes of the model.
    seed
        Seed of the random contexts (with ``n_samples``).
    precision
        ``"32-true"`` (default) or a reduced precision, as in
        :meth:`~gexbert_sc.GexBERT.get_latent_representation`.
    reference_blend
        Blend the restorations with the mean of each sample's nearest training samples
        (default), or restore with the decoder alone (``False``); as in
        :meth:`~gexbert_sc.GexBERT.impute_expression`.
    coverage
        Nominal coverage in (0, 1): also write calibrated intervals that hold a missing
        entry's true value with this probability (by gene and by the sample's share of
        observed genes; see :doc:`/uncertainty`) to ``f"{key_added}_lower"`` and
        ``f"{key_added}_upper"``. The model needs a calibration (fitted by
        :meth:`~gexbert_sc.GexBERT.train` on its validation samples, or by
        :meth:`~gexbert_sc.GexBERT.calibrate`).
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    Depending on ``copy``, returns or updates ``adata`` with the following fields.

    `adata.layers['gexbert_imputed' | key_added]` : :class:`numpy.ndarray` (dtype `float32`)
        Values on the input scale (counts in → expected counts out; log in → log out). Every
        entry is restored or kept, so the layer is dense, with one exception: with ``genes``
        on sparse (or backed sparse) input it is a :class:`scipy.sparse.csr_matrix` holding
        the input's stored entries outside ``genes`` (NaN where missing) and every entry of
        ``genes``, so that restoring a few genes of a large sparse matrix never builds a
        dense ``samples × genes`` block. Beyond the layers written, no copy of the input is
        made: the model reads it a minibatch at a time.
    `adata.layers[key_added + '_mask']` : :class:`scipy.sparse.csr_matrix` (dtype `bool`)
        ``True`` where the value was imputed (was missing in the input; with ``genes``, only
        in those genes).
    `adata.layers[key_added + '_std']` : :class:`numpy.ndarray` (dtype `float32`)
        Only with ``n_samples`` (CSR when the values layer is): the spread of the restorations
        on the model's log scale (log1p of size-factor normalised values for counts, the
        input values for log input); 0 where an observed value was kept.
    `adata.layers[key_added + '_lower']`, `adata.layers[key_added + '_upper']`
        Only with ``coverage`` (same type and scale as the values layer): the interval's
        bounds; equal to the value where an observed value was kept (and outside
        ``genes``).
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
    if coverage is not None and np.ndim(coverage) != 0:
        msg = f"`coverage` must be one number in (0, 1) (one interval per layer), got {coverage!r}."
        raise ValueError(msg)
    adata = prepare_target(adata, copy)
    values, imputed, spread, lower, upper = model.impute_expression(
        adata,
        genes=genes,
        keep_observed=keep_observed,
        batch_size=batch_size,
        query_chunk_size=query_chunk_size,
        memory_budget=memory_budget,
        n_samples=n_samples,
        seed=seed,
        precision=precision,
        reference_blend=reference_blend,
        coverage=coverage,
    )
    bounds = (
        {}
        if lower is None
        else {
            key_added + OUTPUT_KEYS.IMPUTED_LOWER_SUFFIX: lower,
            key_added + OUTPUT_KEYS.IMPUTED_UPPER_SUFFIX: upper,
        }
    )
    expression = model.expression_of(adata)
    if genes is not None:
        setup = model.registry_["setup_args"]
        columns = model._gene_indices(genes)
        n_vars = expression.n_vars
        sparse = is_sparse_like(registered_matrix(expression, setup.get("layer")))
        into_input = _into_sparse_input if sparse else _into_dense_input
        values = into_input(expression, setup, values, columns)
        bounds = {key: into_input(expression, setup, b, columns) for key, b in bounds.items()}
        imputed = _widen_mask(imputed, columns, n_vars)
        if spread is not None:
            spread = (
                _block_csr(spread, columns, n_vars)
                if sparse
                else _into_zeros(spread, columns, n_vars)
            )
    outputs = {key_added: values, key_added + OUTPUT_KEYS.IMPUTED_MASK_SUFFIX: imputed}
    if spread is not None:
        outputs[key_added + OUTPUT_KEYS.IMPUTED_STD_SUFFIX] = spread
    outputs.update(bounds)
    for key, layer in outputs.items():
        warn_if_overwriting(expression.layers, key, "layers")
        expression.layers[key] = layer
    params = {
        "genes": None if genes is None else list(genes),
        "keep_observed": keep_observed,
        "batch_size": batch_size,
        "query_chunk_size": query_chunk_size,
        "memory_budget": memory_budget,
        "n_samples": n_samples,
        "seed": seed,
        "precision": precision,
        "reference_blend": reference_blend,
        "coverage": coverage,
        "layers": list(outputs),
        "n_imputed": int(imputed.nnz),
    }
    record(adata, model, key_added, params)
    logger.info("Added %s (%d entries imputed).", [f"layers[{k!r}]" for k in outputs], imputed.nnz)
    return adata if copy else None


def _into_dense_input(
    expression: AnnData, setup: dict, restored: np.ndarray, columns: np.ndarray
) -> np.ndarray:
    """Return the measured values (NaN where missing) with ``restored`` in ``columns``."""
    values = measured_matrix(expression, setup)
    values[:, columns] = restored
    return values


def _into_sparse_input(
    expression: AnnData, setup: dict, restored: np.ndarray, columns: np.ndarray
) -> sp.csr_matrix:
    """Return :func:`_into_dense_input`'s values as CSR, never densifying the sparse input.

    It stores the input's entries outside ``columns`` (NaN where the missing layer flags
    one) and every entry of ``restored``: ``O(nnz + n_obs × len(columns))``.
    """
    n_vars = expression.n_vars
    outside = np.arange(n_vars)
    outside[columns] = -1
    matrix = registered_matrix(expression, setup.get("layer"))
    values = take_columns(matrix, outside, fill=None).astype(np.float32, copy=False)
    missing_layer = setup.get("missing_layer")
    if missing_layer is not None:
        mask = take_columns(expression.layers[missing_layer], outside, fill=None)
        flagged = np.where(mask.data, np.float32(np.nan), np.float32(0))
        values = values + sp.csr_matrix((flagged, mask.indices, mask.indptr), mask.shape)
    result = values + _block_csr(restored, columns, n_vars)
    result.sort_indices()
    return result


def _block_csr(block: np.ndarray, columns: np.ndarray, n_vars: int) -> sp.csr_matrix:
    """Return a ``(n, n_vars)`` CSR matrix holding ``block``'s columns at ``columns``."""
    order = np.argsort(columns)
    n_rows, width = block.shape
    return sp.csr_matrix(
        (
            np.ascontiguousarray(block[:, order]).ravel(),
            np.tile(columns[order], n_rows),
            width * np.arange(n_rows + 1),
        ),
        shape=(n_rows, n_vars),
    )


def _widen_mask(mask: sp.csr_matrix, columns: np.ndarray, n_vars: int) -> sp.csr_matrix:
    """Return a ``(n, n_vars)`` mask holding ``mask``'s columns at positions ``columns``."""
    mask = mask.tocsr()
    wide = sp.csr_matrix((mask.data, columns[mask.indices], mask.indptr), (mask.shape[0], n_vars))
    wide.sort_indices()
    return wide


def _into_zeros(block: np.ndarray, columns: np.ndarray, n_vars: int) -> np.ndarray:
    """Return zeros of ``(n, n_vars)`` holding ``block``'s columns at ``columns``."""
    wide = np.zeros((block.shape[0], n_vars), dtype=block.dtype)
    wide[:, columns] = block
    return wide
