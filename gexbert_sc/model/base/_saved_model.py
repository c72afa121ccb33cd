"""Saved models: their statistics described, their class and contents checked on load."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch

#: module buffers that hold the statistics fitted on the training data
STATISTICS = (
    "input_is_counts",
    "gene_share",
    "bin_edges",
    "gene_mean",
    "gene_min",
    "gene_max",
    "max_size_factor",
)


def describe_statistics(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Describe the fitted statistics of a module's state dict.

    Parameters
    ----------
    state
        A module's state dict; the :data:`STATISTICS` buffers it holds are described.

    Returns
    -------
    ``{name: {"shape": [...], "dtype": "float32", "sha256": hex digest of the values}}``.
    """
    described = {}
    for name in STATISTICS:
        if name in state:
            values = state[name].detach().cpu().contiguous()
            described[name] = {
                "shape": list(values.shape),
                "dtype": str(values.dtype).removeprefix("torch."),
                "sha256": hashlib.sha256(values.numpy().tobytes()).hexdigest(),
            }
    return described


def check_model_class(directory: Path, found: str, cls: type, allowed: Collection[str]) -> None:
    """Refuse a model saved by another class than ``cls`` (or the ``allowed`` class names).

    Parameters
    ----------
    directory
        The saved model directory (named in the message).
    found
        The class that saved it.
    cls
        The class loading it.
    allowed
        Other class names ``cls`` may load.

    Raises
    ------
    ValueError
        If ``found`` is neither ``cls``'s name nor in ``allowed``.
    """
    if found != cls.__name__ and found not in allowed:
        msg = (
            f"{str(directory)!r} holds a {found} model; {cls.__name__}.load cannot load it. "
            f"Load it with {found}.load."
        )
        raise ValueError(msg)


def check_loaded(directory: Path, manifest: Mapping[str, Any], actual: Mapping[str, Any]) -> None:
    """Check that a loaded model has the vocabulary and statistics its manifest records.

    Parameters
    ----------
    directory
        The saved model directory.
    manifest
        Its manifest.
    actual
        ``{"vocabulary": [...], "statistics": describe_statistics(...)}`` of the loaded model.

    Raises
    ------
    ValueError
        If either differs from the manifest's.
    """
    saved, loaded = manifest["statistics"], actual["statistics"]
    # a manifest written before a statistic existed does not record it (the loaded model
    # holds its placeholder)
    differ = sorted(name for name in saved if saved[name] != loaded.get(name))
    if manifest["vocabulary"] != actual["vocabulary"]:
        differ.append("vocabulary")
    if differ:
        msg = (
            f"The model loaded from {str(directory)!r} differs from its manifest in {differ}; "
            "the directory is inconsistent. Save the model again."
        )
        raise ValueError(msg)


def read_model_file(path: Path) -> dict[str, Any]:
    """Read a saved ``model.pt``, refusing a missing, truncated or corrupted one clearly.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    The saved dictionary (state dict, var names, attributes).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If it cannot be read as a saved model.
    """
    if not path.is_file():
        msg = f"{str(path.parent)!r} has no {path.name!r}: it is not a saved model directory."
        raise FileNotFoundError(msg)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a damaged pickle or zip fails in many ways
        msg = (
            f"{str(path)!r} is damaged (truncated or corrupted: {type(error).__name__}: "
            f"{str(error)[:200]}); save the model again, or restore the file from a copy."
        )
        raise ValueError(msg) from error
    if not isinstance(saved, dict) or not {"model_state_dict", "attr_dict"} <= saved.keys():
        msg = f"{str(path)!r} is not a saved model: it lacks the state dict and attributes."
        raise ValueError(msg)
    return saved
