"""Docstrings that share parameter text, written once (as scanpy's ``_doc_params``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def doc_params(**texts: str) -> Callable[[F], F]:
    """Fill ``{name}`` placeholders of the decorated function's docstring with ``texts``.

    Only the named placeholders are replaced, so a docstring may hold other braces (a dict
    literal, a set). A text spanning several lines is written at the indentation the
    docstring's parameter section uses (4 spaces for a name, 8 for its description).

    Parameters
    ----------
    **texts
        Placeholder names and the text each stands for.

    Returns
    -------
    The decorator.

    Raises
    ------
    ValueError
        At import time, if a named placeholder is absent from the docstring (a stale
        template would otherwise go unnoticed).
    """

    def decorate(function: F) -> F:
        doc = function.__doc__ or ""
        for name, text in texts.items():
            placeholder = "{" + name + "}"
            if placeholder not in doc:
                msg = f"The docstring of {function.__qualname__} has no {placeholder} placeholder."
                raise ValueError(msg)
            doc = doc.replace(placeholder, text)
        function.__doc__ = doc
        return function

    return decorate
