"""Match a query's gene identifiers to a model's genes (exact, then case/version-insensitive)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from anndata import AnnData

#: An Ensembl stable ID with a version suffix, e.g. ``ENSG00000141510.17``.
_ENSEMBL_VERSION = re.compile(r"^(ENS[A-Z]*\d{6,})\.\d+$", flags=re.IGNORECASE)


def gene_key(name: str) -> str:
    """Return the key under which two identifiers of one gene compare equal.

    Case is ignored and an Ensembl version suffix is dropped: ``"ENSG00000141510.17"``,
    ``"ensg00000141510"`` and ``"ENSG00000141510"`` share a key, as do ``"TP53"`` and
    ``"Tp53"``.

    Parameters
    ----------
    name
        A gene symbol or identifier.
    """
    return _ENSEMBL_VERSION.sub(r"\1", str(name)).casefold()


def query_identifiers(adata: AnnData, var_key: str | None) -> pd.Index:
    """Return the identifiers to match: ``adata.var_names`` or the column ``var[var_key]``.

    Raises
    ------
    KeyError
        If ``var_key`` is not a column of ``adata.var``.
    """
    if var_key is None:
        return pd.Index(adata.var_names)
    if var_key not in adata.var:
        msg = (
            f"`var_key={var_key!r}` is not a column of `adata.var`; available: "
            f"{list(adata.var.columns)} (or `var_key=None` for `adata.var_names`)."
        )
        raise KeyError(msg)
    return pd.Index(adata.var[var_key])


def match_genes(identifiers: pd.Index, model_genes: pd.Index) -> np.ndarray:
    """Return, for each model gene, the position of the query gene that holds it (or ``-1``).

    Identifiers equal to a model gene match first; the model genes left are then matched by
    :func:`gene_key` among the query genes left. Missing identifiers (NaN) match nothing.

    Parameters
    ----------
    identifiers
        The query's identifier of each of its genes, in its order.
    model_genes
        The model's genes, in the model's order.

    Returns
    -------
    ``(len(model_genes),)`` integer positions into ``identifiers``.

    Raises
    ------
    ValueError
        If two query genes match one model gene (or one query gene two model genes), naming
        them: the values of neither can be chosen.
    """
    positions = np.full(len(model_genes), -1, dtype=np.int64)
    valid = ~pd.isna(identifiers)
    names = pd.Series(identifiers[valid].astype(str), index=np.flatnonzero(valid))
    model = pd.Series(model_genes.astype(str), index=np.arange(len(model_genes)))
    for key in (str, gene_key):
        left_query = names.drop(positions[positions >= 0])
        left_model = model[positions < 0]
        pairs = pd.merge(
            pd.DataFrame({"key": left_query.map(key), "query": left_query.index}),
            pd.DataFrame({"key": left_model.map(key), "model": left_model.index}),
            on="key",
        )
        _refuse_ambiguous(pairs, names, model)
        positions[pairs["model"].to_numpy()] = pairs["query"].to_numpy()
    return positions


def _refuse_ambiguous(pairs: pd.DataFrame, names: pd.Series, model: pd.Series) -> None:
    """Raise if a model gene or a query gene appears in more than one matched pair."""
    for side in ("model", "query"):
        repeated = pairs[pairs[side].duplicated(keep=False)]
        if repeated.empty:
            continue
        first = repeated[side].iloc[0]
        clash = repeated[repeated[side] == first]
        model_genes = list(model[clash["model"]].unique())
        query_genes = list(names[clash["query"]].unique())
        n_clashes = repeated[side].nunique()
        msg = (
            f"Ambiguous gene match: query genes {query_genes} all match model genes "
            f"{model_genes} ({n_clashes} such clashes in all). Keep one identifier per gene "
            "(e.g. drop or rename the duplicates, or aggregate their values) or match on "
            "another `var_key`."
        )
        raise ValueError(msg)
