"""Checks and provenance records shared by the ``tl`` writers."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

from gexbert_sc._constants import OUTPUT_KEYS

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

    from gexbert_sc.model import GexBERTBase

logger = logging.getLogger(__name__)


def prepare_target(adata: AnnData | MuData, copy: bool) -> AnnData | MuData:
    """Return the object a writer writes to: a copy of ``adata`` (made first) or ``adata``.

    Copying before the model reads the data keeps scvi-tools' registration columns and uuids,
    which the model's data checks add to a new input, out of the caller's object.
    """
    return adata.copy() if copy else adata


def warn_if_overwriting(mapping: Any, key: str, where: str) -> None:
    """Warn (as scanpy does) when a writer replaces an existing key."""
    if key in mapping:
        warnings.warn(f"Overwriting existing `{where}[{key!r}]`.", UserWarning, stacklevel=3)


def record(
    adata: AnnData | MuData, model: GexBERTBase, key_added: str, params: dict[str, Any]
) -> None:
    """Store, under ``uns["gexbert"]["outputs"][key_added]``, the call and the model behind it.

    Each output keeps its own record (the writer's parameters and the model's
    :meth:`~gexbert_sc.model.GexBERTBase.provenance`), so that outputs written by different
    models name their own.
    """
    from gexbert_sc import __version__

    entry = adata.uns.setdefault(OUTPUT_KEYS.UNS, {})
    entry["version"] = __version__
    outputs = entry.setdefault(OUTPUT_KEYS.UNS_OUTPUTS, {})
    outputs[key_added] = {"params": params, **model.provenance()}
