"""Training shared by the GexBERT model family: precision, seeding, argument checks."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np
import scvi
import torch
from scvi.model.base import UnsupervisedTrainingMixin

from gexbert_sc.model.base._checks import check_positive_integers, is_finite_number
from gexbert_sc.train import GexBERTTrainingPlan, Precision, resolve_precision

logger = logging.getLogger(__name__)


def default_max_epochs(n_obs: int) -> int:
    """Epochs for ``train()`` when none are given: about 40k sample passes, 10–100 epochs.

    Parameters
    ----------
    n_obs
        Number of samples in the training AnnData.

    Returns
    -------
    The number of epochs.
    """
    return int(np.clip(round(40_000 / max(n_obs, 1)), 10, 100))


@contextlib.contextmanager
def _scvi_seed(seed: int) -> Iterator[None]:
    """Set ``scvi.settings.seed`` for the duration of a call, then restore it."""
    previous = scvi.settings.seed
    scvi.settings.seed = seed
    try:
        yield
    finally:
        scvi.settings.seed = previous


class TrainingMixin(UnsupervisedTrainingMixin):
    """``train()`` for every GexBERT model.

    The plan is the class's ``_training_plan_cls``; the objective is the module's (its
    ``training_encoding`` and ``loss``).
    """

    _training_plan_cls = GexBERTTrainingPlan
    #: ``batch_size`` of :meth:`train` when none is given.
    _default_batch_size = 64

    def train(
        self,
        max_epochs: int | None = None,
        *,
        batch_size: int | None = None,
        lr: float = 1e-3,
        precision: Precision = "auto",
        early_stopping: bool = False,
        check_val_every_n_epoch: int = 1,
        train_size: float | None = None,
        validation_size: float | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ) -> None:
        """Train with the module's objective (pretraining: masked restoration).

        Parameters
        ----------
        max_epochs
            Passes over the training samples; ``None`` uses :func:`default_max_epochs`.
        batch_size
            Minibatch size (default 64; 256 for :class:`~gexbert_sc.GexBERTSurvival`, whose
            Cox risk sets are formed within a minibatch).
        lr
            Peak AdamW learning rate (warm-up then cosine decay).
        precision
            ``"auto"`` (bf16 autocast where the hardware runs it natively, else fp32),
            ``"32-true"``, ``"bf16-mixed"`` or ``"16-mixed"``.
        early_stopping
            Stop when ``validation_loss`` stops improving (``early_stopping_patience`` etc.
            can be given in ``trainer_kwargs``).
        check_val_every_n_epoch
            Validation frequency; the validation loss is computed with masking on. Ignored
            when ``train_size=1.0`` (no validation samples).
        train_size, validation_size
            Split of the samples (:class:`scvi.dataloaders.DataSplitter`).
        accelerator, devices
            Passed to Lightning (``"cpu"``, ``"gpu"``, ``"auto"``; devices and strategies).
        plan_kwargs
            Passed to :class:`~gexbert_sc.train.GexBERTTrainingPlan`.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (e.g. ``enable_progress_bar=False``);
            ``gradient_clip_val`` defaults to 1.0.
        """
        if max_epochs is None:
            max_epochs = default_max_epochs(self.adata.n_obs)
        if batch_size is None:
            batch_size = self._default_batch_size
        check_positive_integers(max_epochs=max_epochs, batch_size=batch_size)
        if not is_finite_number(lr) or lr <= 0:
            msg = f"`lr` must be a positive finite number, got {lr!r}."
            raise ValueError(msg)
        on_gpu = accelerator in ("gpu", "cuda") or (
            accelerator == "auto" and torch.cuda.is_available()
        )
        resolved = resolve_precision(precision, on_gpu)
        trainer_kwargs.setdefault("gradient_clip_val", 1.0)
        trainer_kwargs.setdefault("early_stopping_monitor", "validation_loss")
        logger.info("Training for %d epochs (precision %s).", max_epochs, resolved)
        # the getters leave the module in eval mode, and Lightning does not switch it back
        self.module.train()
        with _scvi_seed(self.seed_):
            super().train(
                max_epochs=max_epochs,
                batch_size=batch_size,
                early_stopping=early_stopping,
                train_size=train_size,
                validation_size=validation_size,
                accelerator=accelerator,
                devices=devices,
                plan_kwargs={"lr": lr, "seed": self.seed_, **(plan_kwargs or {})},
                # without validation samples Lightning refuses a validation frequency
                check_val_every_n_epoch=None if train_size == 1.0 else check_val_every_n_epoch,
                precision=resolved,
                **trainer_kwargs,
            )
