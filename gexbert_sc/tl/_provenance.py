"""Provenance records written by the ``tl`` functions into ``uns["gexbert"]``."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

from gexbert_sc._constants import OUTPUT_KEYS

if TYPE_CHECKING:
    from anndata import AnnData

    from gexbert_sc.model import GexBERT

logger = logging.getLogger(__name__)


def check_model(model: Any) -> None:
    """Raise a :class:`TypeError` unless ``model`` is a trained :class:`~gexbert_sc.GexBERT`."""
    from gexbert_sc.model import GexBERT

    if not isinstance(model, GexBERT):
        msg = f"`model` must be a gexbert_sc.GexBERT, got {type(model).__name__}."
        raise TypeError(msg)
    if not model.is_trained:
        msg = "`model` is not trained yet; run `model.train()` first."
        raise RuntimeError(msg)


def warn_if_overwriting(mapping: Any, key: str, where: str) -> None:
    """Warn (as scanpy does) when a writer replaces an existing key."""
    if key in mapping:
        warnings.warn(f"Overwriting existing `{where}[{key!r}]`.", UserWarning, stacklevel=3)


def record(adata: AnnData, model: GexBERT, key_added: str, params: dict[str, Any]) -> None:
    """Store the writer's parameters and the model's description under ``uns["gexbert"]``."""
    from gexbert_sc import __version__

    entry = adata.uns.setdefault(OUTPUT_KEYS.UNS, {})
    entry["version"] = __version__
    entry["model"] = model._model_summary_string
    entry["model_init_params"] = {
        k: v for k, v in model.init_params_["non_kwargs"].items() if v is not None
    }
    entry.setdefault("outputs", {})[key_added] = {"params": params}
