"""Per-group gene rankings in the ``uns`` layout of :func:`scanpy.tl.rank_genes_groups`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: ``params["method"]`` of the rankings written here (scanpy's own methods are other names);
#: a GexBERT importance method ``m`` is recorded as ``"gexbert_" + m``.
MEAN_METHOD, GEXBERT_METHOD_PREFIX = "mean_expression", "gexbert_"


def rankings_uns(
    table: pd.DataFrame, groupby: str, method: str, extra_params: dict[str, Any]
) -> dict[str, Any]:
    """Build a ``rank_genes_groups``-shaped dict from a tidy table of per-group scores.

    Parameters
    ----------
    table
        One row per group and gene: ``group`` (categorical), ``gene``, ``score``, ``rank``,
        ``logfoldchange``, ``pts`` and ``pts_rest``.
    groupby
        The ``obs`` column the groups come from.
    method
        ``params["method"]`` (not ``"logreg"``, so that :func:`scanpy.get.rank_genes_groups_df`
        reads every field).
    extra_params
        Further entries of ``params``.

    Returns
    -------
    ``params``; ``names``, ``scores``, ``logfoldchanges``, ``pvals`` and ``pvals_adj``
    (record arrays with one field per group, genes in rank order; the p-values are NaN: these
    rankings have no test); ``pts`` and ``pts_rest`` (genes × groups DataFrames).
    """
    groups = list(table["group"].cat.categories)
    ordered = table.sort_values(["group", "rank"])
    parts = dict(list(ordered.groupby("group", observed=True)))

    def fields(column: str, dtype: Any) -> np.recarray:
        arrays = [parts[name][column].to_numpy().astype(dtype) for name in groups]
        return np.rec.fromarrays(arrays, names=groups)

    pvalues = fields("score", np.float64)
    for name in groups:
        pvalues[name] = np.nan
    genes = table["gene"].drop_duplicates()
    by_gene = table.pivot(index="gene", columns="group", values=["pts", "pts_rest"]).loc[genes]
    return {
        "params": {
            "groupby": groupby,
            "reference": "rest",
            "method": method,
            "use_raw": False,
            "layer": None,
            "corr_method": None,
            **extra_params,
        },
        "names": fields("gene", str),
        "scores": fields("score", np.float32),
        "logfoldchanges": fields("logfoldchange", np.float32),
        "pvals": pvalues,
        "pvals_adj": pvalues.copy(),
        "pts": _per_group(by_gene["pts"], groups),
        "pts_rest": _per_group(by_gene["pts_rest"], groups),
    }


def _per_group(frame: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    """Genes × groups with plain string column names (scanpy's ``pts`` layout)."""
    frame = frame[groups].copy()
    frame.columns = pd.Index(groups, dtype=object)
    frame.index.name = None
    return frame


def ranked_names(uns: dict[str, Any], group: str, n_genes: int | None = None) -> list[str]:
    """Return the first ``n_genes`` genes (all by default) of ``group`` in a ranking dict."""
    names = uns["names"]
    if group not in names.dtype.names:
        msg = f"group {group!r} is not in the ranking; it has {list(names.dtype.names)}."
        raise KeyError(msg)
    return [str(name) for name in names[group][:n_genes]]
