"""Reading a query: its expression and columns, AnnData or MuData, laid out as the model's.

A model set up with an AnnData reads a MuData through its expression modality, and a model
set up with a MuData reads an AnnData of the same genes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anndata as ad
import pandas as pd

from gexbert_sc.data._validation import expression_data

if TYPE_CHECKING:
    from mudata import MuData


def query_expression(data: Any, setup_args: dict[str, Any], var_names: pd.Index) -> ad.AnnData:
    """Return the AnnData that holds a query's expression values.

    An AnnData is its own expression. A MuData's expression is the modality the model was
    set up with (a model set up with :meth:`~gexbert_sc.GexBERT.setup_mudata`), else the one
    modality whose genes are the model's, in its order.

    Parameters
    ----------
    data
        The query: an AnnData or a MuData.
    setup_args
        The model registry's ``setup_args``.
    var_names
        The model's genes.

    Returns
    -------
    The AnnData whose values the model reads and whose ``layers`` receive restorations.

    Raises
    ------
    TypeError
        If ``data`` is neither an AnnData nor a MuData.
    KeyError
        If a MuData lacks the model's expression modality.
    ValueError
        If no modality, or more than one, has the model's genes in its order.
    """
    if isinstance(data, ad.AnnData):
        return data
    if not hasattr(data, "mod"):
        msg = f"`adata` must be an AnnData or a MuData, got {type(data).__name__}."
        raise TypeError(msg)
    if setup_args.get("modalities") is not None:
        return expression_data(data, setup_args)
    matching = [name for name, mod in data.mod.items() if mod.var_names.equals(var_names)]
    if len(matching) != 1:
        found = "no modality" if not matching else f"several modalities ({matching})"
        msg = (
            f"The MuData has {found} with the model's {len(var_names)} genes in its order; "
            f"its modalities are {list(data.mod)}. Pass the expression modality as an "
            "AnnData, aligned with `gexbert_sc.data.align_genes(mdata.mod[name], model)`."
        )
        raise ValueError(msg)
    return data.mod[matching[0]]


def query_obs_column(data: Any, expression: ad.AnnData, key: str, argument: str) -> pd.Series:
    """Return a registered ``obs`` column (``argument``, e.g. the batches) of a query.

    An AnnData holds it in its ``obs``; a MuData in its expression modality's ``obs``, else in
    its global ``obs``.

    Raises
    ------
    KeyError
        Naming ``argument`` and the columns found, if the column is absent.
    """
    for obs in (expression.obs, getattr(data, "obs", expression.obs)):
        if key in obs:
            return obs[key]
    msg = f"`{argument}={key!r}` is not a column of `adata.obs`; available: {list(expression.obs)}."
    raise KeyError(msg)


def registered_layout(view: ad.AnnData, setup_args: dict[str, Any]) -> ad.AnnData | MuData:
    """Lay a query's reading view out as the model's own data: an AnnData, or a MuData.

    For a model set up with a MuData, the view becomes its expression modality, and each
    registered ``obs`` column goes where the set-up reads it: the global ``obs``, or the
    ``obs`` of the modality it names (a modality without genes, if it is another).

    Parameters
    ----------
    view
        The reading view (the registered layers and ``obs`` columns only).
    setup_args
        The model registry's ``setup_args``.

    Returns
    -------
    ``view`` itself for a model set up with an AnnData, else a new MuData around it.
    """
    modalities = setup_args.get("modalities")
    if modalities is None:
        return view
    import mudata

    expression_name = modalities["rna_layer"]
    others: dict[str, pd.DataFrame] = {}
    global_columns: dict[str, Any] = {}
    for argument in ("batch_key", "labels_key"):
        key = setup_args.get(argument)
        if key is None:
            continue
        place = modalities.get(argument)
        if place is None:
            global_columns[key] = view.obs[key].to_numpy()
        elif place != expression_name:
            others.setdefault(place, pd.DataFrame(index=view.obs_names.copy()))[key] = view.obs[
                key
            ].to_numpy()
    mods = {expression_name: view, **{name: ad.AnnData(obs=obs) for name, obs in others.items()}}
    layout = mudata.MuData(mods)
    for key, values in global_columns.items():
        layout.obs[key] = values
    return layout
