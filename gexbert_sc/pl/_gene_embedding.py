"""A UMAP of the gene embeddings: genes the model uses alike fall together."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc

from gexbert_sc._constants import OUTPUT_KEYS
from gexbert_sc.data._validation import require_output
from gexbert_sc.pl._utils import DOC_AX_SHOW_SAVE, savefig_or_show
from gexbert_sc.utils import doc_params

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes


@doc_params(ax_show_save=DOC_AX_SHOW_SAVE)
def gene_embedding_umap(
    adata: AnnData,
    key: str = OUTPUT_KEYS.GENE_EMBEDDING,
    *,
    color: str | None = None,
    label_genes: Sequence[str] = (),
    n_neighbors: int = 15,
    seed: int = 0,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Draw a UMAP of the genes from their embeddings in ``varm[key]``.

    The neighbour graph and UMAP are computed by scanpy on an AnnData of the genes (genes
    with a NaN embedding are left out).

    Parameters
    ----------
    adata
        AnnData whose ``varm[key]`` holds gene embeddings (written by
        :func:`gexbert_sc.tl.gene_embedding`).
    key
        ``varm`` key.
    color
        A ``var`` column to colour the genes by (e.g. ``highly_variable`` or a gene set
        flag): categories get a legend, numbers a colour bar.
    label_genes
        Genes to name on the plot.
    n_neighbors
        Neighbours of the gene graph.
    seed
        Seed of the UMAP layout.
    {ax_show_save}

    Raises
    ------
    KeyError
        If ``varm[key]``, the ``color`` column or a labelled gene is missing.
    ValueError
        If fewer than ``n_neighbors + 1`` genes have an embedding.
    """
    embedding = np.asarray(
        require_output(adata.varm, key, "varm", "gexbert_sc.tl.gene_embedding"), dtype=np.float32
    )
    if color is not None and color not in adata.var:
        msg = f"`color={color!r}` is not a column of `adata.var`; available: {list(adata.var)}."
        raise KeyError(msg)
    unknown = [gene for gene in label_genes if gene not in adata.var_names]
    if unknown:
        msg = f"`label_genes` holds genes not in `adata.var_names`: {unknown[:5]}."
        raise KeyError(msg)
    known = ~np.isnan(embedding).any(axis=1)
    if known.sum() <= n_neighbors:
        msg = f"{int(known.sum())} genes have an embedding; `n_neighbors={n_neighbors}` needs more."
        raise ValueError(msg)
    genes = ad.AnnData(embedding[known], obs=adata.var.loc[known].copy())
    sc.pp.neighbors(genes, n_neighbors=n_neighbors, use_rep="X", random_state=seed)
    sc.tl.umap(genes, random_state=seed)
    layout = pd.DataFrame(genes.obsm["X_umap"], index=genes.obs_names, columns=["x", "y"])
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    _scatter(ax, layout, None if color is None else genes.obs[color])
    for gene in label_genes:
        if gene in layout.index:
            ax.annotate(gene, layout.loc[gene], fontsize=7)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(f"{int(known.sum())} genes ({key})")
    return savefig_or_show(ax, show, save)


def _scatter(ax: Axes, layout: pd.DataFrame, values: pd.Series | None) -> None:
    """Scatter the genes, coloured by ``values`` (categories: legend; numbers: colour bar)."""
    if values is None:
        ax.scatter(layout["x"], layout["y"], s=4, color="grey")
        return
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        points = ax.scatter(layout["x"], layout["y"], s=4, c=values.to_numpy(), cmap="viridis")
        ax.figure.colorbar(points, ax=ax, label=values.name)
        return
    for category in pd.Categorical(values).categories:
        inside = (values == category).to_numpy()
        ax.scatter(layout["x"][inside], layout["y"][inside], s=4, label=str(category))
    ax.legend(title=values.name, fontsize=7, markerscale=3)
