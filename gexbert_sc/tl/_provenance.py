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


def check_model(model: Any, model_cls: type | None = None) -> None:
    """Raise unless ``model`` is a trained model of ``model_cls`` (default: the GexBERT family).

    Parameters
    ----------
    model
        The ``model`` argument of a writer.
    model_cls
        The model class the writer needs.

    Raises
    ------
    TypeError
        If ``model`` is not an instance of ``model_cls``.
    RuntimeError
        If it is not trained.
    """
    from gexbert_sc.model import GexBERTBase

    model_cls = GexBERTBase if model_cls is None else model_cls
    if not isinstance(model, model_cls):
        expected = "gexbert_sc.GexBERT" if model_cls is GexBERTBase else model_cls.__name__
        msg = f"`model` must be a {expected}, got {type(model).__name__}."
        raise TypeError(msg)
    model._check_if_trained(
        message=f"`model` ({type(model).__name__}) is not trained yet; run `model.train()` first."
    )


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
