"""Checks at the door of ``setup_anndata``: clear errors before any compute."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from gexbert_sc.data._input_scale import (
    InputScale,
    ScaleDecision,
    check_input_scale,
    decide_input_scale,
)
from gexbert_sc.data._matrix import scan_values, to_dense

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)


def registered_matrix(adata: AnnData, layer: str | None, argument: str = "layer") -> Any:
    """Return ``adata.layers[layer]`` (or ``adata.X``), raising a clear error if absent."""
    if layer is None:
        if adata.X is None:
            msg = "`adata.X` is empty; pass `layer=` naming the layer that holds expression."
            raise ValueError(msg)
        return adata.X
    if layer not in adata.layers:
        msg = f"`{argument}={layer!r}` is not in `adata.layers`; available: {list(adata.layers)}."
        raise KeyError(msg)
    return adata.layers[layer]


def measured_matrix(expression: Any, setup_args: dict[str, Any]) -> np.ndarray:
    """Return the registered values of ``expression`` as a dense float32 array, NaN where missing.

    Parameters
    ----------
    expression
        AnnData holding the expression (in the layer named by ``setup_args``).
    setup_args
        The ``setup_args`` of a model's registry (``layer``, ``missing_layer``).
    """
    matrix = registered_matrix(expression, setup_args.get("layer"))
    values = to_dense(matrix).astype(np.float32)
    missing_layer = setup_args.get("missing_layer")
    if missing_layer is not None:
        values[to_dense(expression.layers[missing_layer]).astype(bool)] = np.nan
    return values


def matrix_name(layer: str | None) -> str:
    """Return how messages name the registered matrix: ``adata.X`` or ``adata.layers[...]``."""
    return "adata.X" if layer is None else f"adata.layers[{layer!r}]"


def check_expression_matrix(adata: AnnData, layer: str | None) -> None:
    """Check that the expression values are a non-empty numeric matrix.

    Raises
    ------
    ValueError
        If ``adata`` has no samples or no genes.
    TypeError
        If the values are not numeric (boolean included: a mask is not expression).
    KeyError
        If ``layer`` is not a layer of ``adata``.
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        msg = f"`adata` is empty ({adata.n_obs} samples × {adata.n_vars} genes)."
        raise ValueError(msg)
    matrix = registered_matrix(adata, layer)
    where = matrix_name(layer)
    dtype = np.dtype(getattr(matrix, "dtype", object))
    if np.issubdtype(dtype, np.bool_):
        msg = (
            f"`{where}` is boolean: True/False is a mask, not expression. Pass a mask of "
            "missing values as `missing_layer=`, or convert expression with `.astype(float)`."
        )
        raise TypeError(msg)
    if not np.issubdtype(dtype, np.number):
        msg = f"`{where}` must be numeric, got dtype {dtype}; convert it with `.astype(float)`."
        raise TypeError(msg)


def check_unique_names(adata: AnnData) -> None:
    """Raise a :class:`ValueError` if ``adata`` has duplicated gene or sample names.

    Genes are tokens of the model's vocabulary, and outputs are written back by name: a
    duplicated name would make both ambiguous.
    """
    for names, what, fix in (
        (adata.var_names, "gene names (`adata.var_names`)", "adata.var_names_make_unique()"),
        (adata.obs_names, "sample names (`adata.obs_names`)", "adata.obs_names_make_unique()"),
    ):
        duplicated = names[names.duplicated()].unique()
        if len(duplicated):
            msg = (
                f"`adata` has {len(duplicated)} duplicated {what}, e.g. "
                f"{list(duplicated[:5])}; expected unique names. Aggregate the duplicates or "
                f"make the names unique with `{fix}`."
            )
            raise ValueError(msg)


def check_not_collection(adata: Any) -> None:
    """Refuse an :class:`anndata.experimental.AnnCollection` (or scvi-tools' adapter of one).

    scvi-tools' :class:`~scvi.dataloaders.CollectionAdapter` (1.4.2) exposes layers only,
    without the membership test, ``shape`` and ``dtype`` a set-up reads, and stores every
    adapter's registration in one class-wide ``uns``; several files are read instead as one
    file concatenated on disk and opened backed (see :doc:`/performance`).

    Raises
    ------
    TypeError
        If ``adata`` is an ``AnnCollection`` or a ``CollectionAdapter``.
    """
    from anndata.experimental import AnnCollection
    from scvi.dataloaders import CollectionAdapter

    # `type`, not `isinstance`: the adapter reports `anndata.AnnData` as its `__class__`
    if issubclass(type(adata), AnnCollection | CollectionAdapter):
        msg = (
            "GexBERT does not read an `AnnCollection` of several files; concatenate them on "
            "disk, out of core, and read the result backed: "
            "`anndata.experimental.concat_on_disk(paths, 'all.h5ad')`, then "
            "`adata = anndata.read_h5ad('all.h5ad', backed='r')`."
        )
        raise TypeError(msg)


def check_not_view(adata: AnnData) -> None:
    """Raise a :class:`ValueError` if ``adata`` is a view (set-up writes into the object)."""
    if getattr(adata, "is_view", False):
        msg = (
            "`adata` is a view of another AnnData; set-up registers columns in the object "
            "itself. Make it an AnnData of its own first: `adata = adata.copy()`."
        )
        raise ValueError(msg)


def check_obs_key(adata: AnnData, key: str | None, argument: str) -> None:
    """Raise a :class:`KeyError` naming ``argument`` if ``key`` is not an ``obs`` column."""
    if key is not None and key not in adata.obs:
        msg = f"`{argument}={key!r}` is not a column of `adata.obs`; available: {list(adata.obs)}."
        raise KeyError(msg)


def check_missing_layer(adata: AnnData, missing_layer: str | None) -> None:
    """Check that the missing-value mask layer exists and is boolean (``True`` = missing)."""
    if missing_layer is None:
        return
    matrix = registered_matrix(adata, missing_layer, argument="missing_layer")
    if np.dtype(matrix.dtype) != np.bool_:
        msg = (
            f"`missing_layer={missing_layer!r}` must be boolean (True = missing), got dtype "
            f"{matrix.dtype}; build it with e.g. `np.isnan(X)`."
        )
        raise TypeError(msg)


def expression_data(data: Any, setup_args: dict) -> AnnData:
    """Return the AnnData holding the registered expression: ``data`` or its RNA modality.

    Parameters
    ----------
    data
        The AnnData or MuData a model was set up with (or one laid out the same way).
    setup_args
        The registry's ``setup_args``; for MuData, ``setup_args["modalities"]["rna_layer"]``
        names the expression modality.
    """
    modalities = setup_args.get("modalities")
    if modalities is None or not hasattr(data, "mod"):
        return data
    name = modalities["rna_layer"]
    if name not in data.mod:
        msg = (
            f"The MuData has no modality {name!r} (the model's expression modality); "
            f"it has {list(data.mod)}."
        )
        raise KeyError(msg)
    return data.mod[name]


def check_expression_setup(
    expression: AnnData, layer: str | None, missing_layer: str | None, input_scale: InputScale
) -> ScaleDecision:
    """Validate the expression arguments of a setup method before anything is registered.

    Every value is read once (:func:`~gexbert_sc.data._matrix.scan_values`): the same pass
    finds infinite values and decides the input scale.

    Parameters
    ----------
    expression
        The AnnData holding the expression values (for MuData: its expression modality).
    layer, missing_layer, input_scale
        The setup arguments of the same names.

    Returns
    -------
    The scale the values are read on, and why (:func:`decide_input_scale`).
    """
    check_not_collection(expression)
    check_not_view(expression)
    check_expression_matrix(expression, layer)
    check_unique_names(expression)
    check_missing_layer(expression, missing_layer)
    check_input_scale(input_scale)
    scan = scan_values(registered_matrix(expression, layer))
    if scan.n_infinite:
        row, col = scan.first_infinite
        msg = (
            f"`{matrix_name(layer)}` holds {scan.n_infinite} infinite values (the first for "
            f"sample {expression.obs_names[row]!r}, gene {expression.var_names[col]!r}); "
            "expected finite values, with NaN (or `missing_layer`) marking missing ones."
        )
        raise ValueError(msg)
    if len(scan.empty_rows) == expression.n_obs:
        msg = f"`{matrix_name(layer)}` holds no observed value: every entry is NaN."
        raise ValueError(msg)
    if len(scan.empty_rows):
        logger.warning(
            "%d samples have no observed value (e.g. %s): they take no part in training, "
            "and their embeddings and restorations carry no information about them.",
            len(scan.empty_rows),
            list(expression.obs_names[scan.empty_rows[:3]]),
        )
    return decide_input_scale(scan, input_scale, layer)


def require_output(mapping: Any, key: str, where: str, writer: str) -> Any:
    """Return ``mapping[key]``, or raise an error saying which function writes it.

    Parameters
    ----------
    mapping
        ``adata.uns``, ``adata.varm``, ... of the caller.
    key
        The key asked for.
    where
        The mapping's name in the message, e.g. ``"uns"``.
    writer
        The function that writes ``key``, e.g. ``"gexbert_sc.tl.rank_genes_attention"``.

    Raises
    ------
    KeyError
        If ``key`` is not in ``mapping``.
    """
    if key not in mapping:
        msg = (
            f"`adata.{where}[{key!r}]` not found; run `{writer}` first (or pass the `key` "
            "it was written under)."
        )
        raise KeyError(msg)
    return mapping[key]
