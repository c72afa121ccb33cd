"""Training and validation loss curves from a model's history."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt

from gexbert_sc.model.base import check_model
from gexbert_sc.pl._utils import DOC_AX_SHOW_SAVE, savefig_or_show
from gexbert_sc.utils import doc_params

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from gexbert_sc.model import GexBERTBase

#: The history keys drawn by default: the training and validation losses per epoch.
LOSS_KEYS = ("train_loss", "validation_loss")


@doc_params(ax_show_save=DOC_AX_SHOW_SAVE)
def loss_curves(
    model: GexBERTBase,
    keys: Sequence[str] = LOSS_KEYS,
    *,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Draw the loss of each training epoch (and of validation, if the model held data out).

    Parameters
    ----------
    model
        A trained model of the GexBERT family.
    keys
        Entries of ``model.history`` to draw (those the history lacks are skipped, e.g.
        ``validation_loss`` after ``train_size=1.0``).
    {ax_show_save}

    Raises
    ------
    RuntimeError
        If the model is not trained.
    KeyError
        If the history has none of ``keys``.
    """
    check_model(model)
    found = [key for key in keys if key in model.history]
    if not found:
        msg = f"`model.history` has none of {list(keys)}; it has {list(model.history)}."
        raise KeyError(msg)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    for key in found:
        curve = model.history[key][key]
        ax.plot(curve.index.to_numpy() + 1, curve.to_numpy(), marker=".", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(type(model).__name__)
    ax.legend()
    return savefig_or_show(ax, show, save)
