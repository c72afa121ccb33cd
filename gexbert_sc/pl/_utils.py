"""Saving or showing a figure, as scanpy's plotting functions do."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

#: The ``ax``, ``show`` and ``save`` parameters and the return value of every plotting
#: function, filled into their docstrings by :func:`gexbert_sc.utils.doc_params`.
DOC_AX_SHOW_SAVE = """\
ax
        Axes to draw on (default: a new figure).
    show
        Show the figure (``None``: show unless ``save`` is given, in an interactive session).
    save
        Path to save the figure to (the format follows the suffix).

    Returns
    -------
    The matplotlib ``Axes``, unless the figure was shown."""


def savefig_or_show(ax: Axes, show: bool | None, save: str | Path | None) -> Axes | None:
    """Save the figure of ``ax`` and/or show it; return ``ax`` unless it was shown.

    Parameters
    ----------
    ax
        The axes drawn on.
    show
        Show the figure (``None``: show unless it is saved, as scanpy does).
    save
        Path to write the figure to (the format follows the suffix, e.g. ``.png``, ``.pdf``).

    Returns
    -------
    ``ax``, or ``None`` when the figure was shown.
    """
    if save is not None:
        ax.figure.savefig(save, bbox_inches="tight")
    if show is None:
        show = save is None and plt.isinteractive()
    if show:
        plt.show()
        return None
    return ax
