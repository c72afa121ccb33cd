"""Checkpoints of a training run: written atomically every n epochs, the newest one resumed."""

from __future__ import annotations

import os
import re
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

#: Names of the checkpoint files that :class:`AtomicCheckpoint` writes.
CHECKPOINT_NAME = re.compile(r"epoch=(?P<epoch>\d+)-step=(?P<step>\d+)\.ckpt")


class AtomicCheckpoint(ModelCheckpoint):
    """Lightning :class:`~lightning.pytorch.callbacks.ModelCheckpoint` whose files appear whole.

    Writes ``epoch=E-step=S.ckpt`` (``E`` 0-based) into ``dirpath`` at the end of every
    ``every_n_epochs``-th training epoch (after its validation) and keeps only the newest.
    Each file is written under a temporary name in ``dirpath`` and then renamed
    (:func:`os.replace`), so a run killed while writing leaves the previous checkpoint
    intact and never a truncated one under a checkpoint name.

    Parameters
    ----------
    dirpath
        Directory of the checkpoints.
    every_n_epochs
        Epochs between checkpoints.
    """

    def __init__(self, dirpath: str | os.PathLike, every_n_epochs: int):
        super().__init__(
            dirpath=dirpath,
            every_n_epochs=every_n_epochs,
            save_top_k=1,
            monitor=None,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        directory, name = os.path.split(filepath)
        partial = os.path.join(directory, f".{name}.partial")
        super()._save_checkpoint(trainer, partial)
        if trainer.is_global_zero:
            os.replace(partial, filepath)
        self._last_checkpoint_saved = filepath


def checkpoint_files(directory: str | os.PathLike) -> list[Path]:
    """Checkpoints written by :class:`AtomicCheckpoint` in ``directory``, oldest first.

    Parameters
    ----------
    directory
        The checkpoint directory; a missing one holds no checkpoints.

    Returns
    -------
    Paths ordered by optimiser step, then epoch.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if match is not None and path.is_file():
            found.append(((int(match["step"]), int(match["epoch"])), path))
    return [path for _, path in sorted(found)]
