"""Restored against observed values of the entries a user hid, with Pearson's r."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import pearsonr

from gexbert_sc._constants import OUTPUT_KEYS
from gexbert_sc.data._matrix import to_dense
from gexbert_sc.data._validation import require_output
from gexbert_sc.pl._utils import DOC_AX_SHOW_SAVE, savefig_or_show
from gexbert_sc.utils import check_positive_integers, doc_params

if TYPE_CHECKING:
    import numpy.typing as npt
    from anndata import AnnData
    from matplotlib.axes import Axes


@doc_params(ax_show_save=DOC_AX_SHOW_SAVE)
def restoration_scatter(
    adata: AnnData,
    truth: AnnData | npt.ArrayLike | str,
    *,
    layer: str = OUTPUT_KEYS.IMPUTED,
    mask: npt.ArrayLike | None = None,
    log1p: bool = False,
    max_points: int = 20_000,
    seed: int = 0,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Scatter the restored values of the hidden entries against their true values.

    The usual check of a restoration: hide some measured entries (e.g.
    :func:`gexbert_sc.metrics.mask_entries`), restore them with :func:`gexbert_sc.tl.impute`,
    and compare with what was hidden. The title gives Pearson's r over all hidden entries
    (at most ``max_points`` random ones are drawn).

    Parameters
    ----------
    adata
        The AnnData that was imputed: ``layers[layer]`` holds the restored values.
    truth
        The values before they were hidden: an AnnData of the same shape (its ``X``), an
        array, or the name of a layer of ``adata``.
    layer
        Layer of restored values.
    mask
        Boolean ``(n_obs, n_vars)``: the hidden entries (default: ``layers[layer + "_mask"]``,
        the entries :func:`gexbert_sc.tl.impute` filled).
    log1p
        Draw and correlate ``log1p`` of the values (for counts).
    max_points
        Entries drawn at most.
    seed
        Seed of the drawn entries.
    {ax_show_save}

    Raises
    ------
    KeyError
        If the layer or its mask is missing (the message says what to run first).
    ValueError
        If ``truth`` or ``mask`` does not match ``adata``'s shape, or no hidden entry has a
        true value.
    """
    check_positive_integers(max_points=max_points)
    restored = to_dense(require_output(adata.layers, layer, "layers", "gexbert_sc.tl.impute"))
    if mask is None:
        mask_key = layer + OUTPUT_KEYS.IMPUTED_MASK_SUFFIX
        mask = require_output(adata.layers, mask_key, "layers", "gexbert_sc.tl.impute")
    mask = to_dense(mask).astype(bool)
    if isinstance(truth, str):
        truth = require_output(adata.layers, truth, "layers", "a layer of the true values")
    elif isinstance(truth, ad.AnnData):
        truth = truth.X
    truth = to_dense(truth).astype(np.float64)
    for name, values in (("truth", truth), ("mask", mask)):
        if values.shape != adata.shape:
            msg = f"`{name}` has shape {values.shape}; `adata` has {adata.shape}."
            raise ValueError(msg)
    scored = mask & np.isfinite(truth)
    if not scored.any():
        msg = "No hidden entry (`mask`) has a finite true value to compare with."
        raise ValueError(msg)
    x, y = truth[scored], restored[scored].astype(np.float64)
    if log1p:
        x, y = np.log1p(x), np.log1p(y)
    r = pearsonr(x, y).statistic if len(x) > 1 else np.nan
    if len(x) > max_points:
        drawn = np.random.default_rng(seed).choice(len(x), max_points, replace=False)
        x, y = x[drawn], y[drawn]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(x, y, s=3, alpha=0.3, linewidths=0)
    low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    ax.plot([low, high], [low, high], color="grey", linewidth=0.8, linestyle="--")
    scale = "log1p " if log1p else ""
    ax.set_xlabel(f"{scale}true value")
    ax.set_ylabel(f"{scale}restored value ({layer})")
    ax.set_title(f"{int(scored.sum())} hidden entries: Pearson r = {r:.3f}")
    return savefig_or_show(ax, show, save)
