"""A Lightning callback that puts the weights of the best validation epoch back at the end."""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

logger = logging.getLogger(__name__)


class RestoreBestWeights(Callback):
    """Keep the module's weights of the epoch with the lowest ``monitor``; restore them at the end.

    After every validation epoch whose ``monitor`` value is finite and strictly lower than
    every earlier one, a copy of the module's ``state_dict`` (the LightningModule's
    ``module``) is kept on the CPU, with the epoch. When the fit ends (early stopping, or the
    epoch ceiling reached), that copy is loaded back into the module and the epoch is logged.
    A fit that fails (e.g. a non-finite loss) leaves the weights as they are.

    The best value, its epoch and the copy are part of the callback's state, hence of the
    Lightning checkpoints of the run: a resumed run ends with the same weights as an
    uninterrupted one. A checkpoint then holds the weights twice (the current and the best).

    Parameters
    ----------
    monitor
        The logged metric to minimise.

    Attributes
    ----------
    best_score
        The lowest value seen (``inf`` before any).
    best_epoch
        Its epoch (0-based; ``None`` before any).
    """

    def __init__(self, monitor: str = "validation_loss"):
        super().__init__()
        self.monitor = monitor
        self.best_score = math.inf
        self.best_epoch: int | None = None
        self._best_weights: dict[str, torch.Tensor] | None = None

    @property
    def state_key(self) -> str:
        """Key of the callback's state in a checkpoint."""
        return self._generate_state_key(monitor=self.monitor)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep a copy of the weights if the monitored value improved."""
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        current = float(trainer.callback_metrics[self.monitor])
        if not math.isfinite(current) or current >= self.best_score:
            return
        self.best_score = current
        self.best_epoch = trainer.current_epoch
        self._best_weights = {
            name: value.detach().to("cpu", copy=True)
            for name, value in pl_module.module.state_dict().items()
        }

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Load the kept copy back into the module."""
        if self._best_weights is None:
            return
        pl_module.module.load_state_dict(self._best_weights)
        logger.info(
            "Restored the weights of epoch %d (%s %.6g).",
            self.best_epoch,
            self.monitor,
            self.best_score,
        )

    def state_dict(self) -> dict[str, Any]:
        """Return the best value, its epoch and the copy of the weights."""
        return {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_weights": self._best_weights,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.best_score = state_dict["best_score"]
        self.best_epoch = state_dict["best_epoch"]
        self._best_weights = state_dict["best_weights"]
