"""The check of the ``model`` argument of the ``tl``, ``pl`` and ``metrics`` functions."""

from __future__ import annotations

from typing import Any

from gexbert_sc.model.base._base import GexBERTBase


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
    model_cls = GexBERTBase if model_cls is None else model_cls
    if not isinstance(model, model_cls):
        expected = "gexbert_sc.GexBERT" if model_cls is GexBERTBase else model_cls.__name__
        msg = f"`model` must be a {expected}, got {type(model).__name__}."
        raise TypeError(msg)
    model._check_if_trained(
        message=f"`model` ({type(model).__name__}) is not trained yet; run `model.train()` first."
    )
