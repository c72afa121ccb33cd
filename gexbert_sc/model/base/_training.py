"""Training shared by the GexBERT model family: precision, seeding, argument checks."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scvi
import torch
from lightning.pytorch.callbacks import Callback
from scvi.model._utils import use_distributed_sampler
from scvi.model.base import UnsupervisedTrainingMixin

from gexbert_sc.data import default_validation_indices
from gexbert_sc.train import (
    AtomicCheckpoint,
    GexBERTTrainingPlan,
    Precision,
    RestoreBestWeights,
    checkpoint_files,
    resolve_precision,
)
from gexbert_sc.train._runner import GexBERTTrainRunner
from gexbert_sc.utils import check_positive_integers, is_finite_number

logger = logging.getLogger(__name__)


def default_max_epochs(n_obs: int) -> int:
    """Epochs for ``train()`` when none are given: about 40k sample passes, 10–100 epochs.

    With early stopping (the default whenever the split leaves validation samples) this is a
    ceiling: training usually stops earlier, once ``validation_loss`` has not improved for
    ``early_stopping_patience`` epochs. Without it, every epoch is run.

    Parameters
    ----------
    n_obs
        Number of samples in the training AnnData.

    Returns
    -------
    The number of epochs.
    """
    return int(np.clip(round(40_000 / max(n_obs, 1)), 10, 100))


def _early_stopping(
    early_stopping: bool | None,
    n_obs: int,
    train_size: float | None,
    validation_size: float | None,
    distributed: bool,
) -> tuple[bool, float | None]:
    """Resolve ``early_stopping`` and ``train_size`` of :meth:`TrainingMixin.train`.

    scvi-tools' split puts ``n_obs - ceil(0.9 n_obs)`` samples (or ``floor(validation_size
    n_obs)``) in validation: none below 10 samples, and Lightning then refuses the empty
    validation loader, so every sample is trained on (``train_size=1.0``). Early stopping
    needs validation samples: ``None`` turns it on where there are some (and off with
    several processes, where scvi-tools does not stop early), ``True`` is refused without
    them.

    Returns
    -------
    Whether to stop early, and the ``train_size`` to use.
    """
    if early_stopping is not None and not isinstance(early_stopping, bool):
        msg = f"`early_stopping` must be None, True or False, got {early_stopping!r}."
        raise TypeError(msg)
    usable = _usable_train_size(n_obs, train_size, validation_size)
    if usable == 1.0:
        if early_stopping:
            msg = (
                f"`early_stopping=True` needs validation samples, but the split of {n_obs} "
                f"samples (`train_size={train_size}`, `validation_size={validation_size}`) "
                "leaves none; lower `train_size` or train without early stopping."
            )
            raise ValueError(msg)
        return False, usable
    if early_stopping is None:
        return not distributed, usable
    return early_stopping, usable


def _usable_train_size(
    n_obs: int, train_size: float | None, validation_size: float | None
) -> float | None:
    """Return ``train_size``, or 1.0 where the split would leave no validation sample."""
    if train_size == 1.0:
        return train_size
    share = 0.9 if train_size is None else train_size
    if validation_size is None:
        n_validation = n_obs - math.ceil(share * n_obs)
    else:
        n_validation = math.floor(validation_size * n_obs)
    if n_validation > 0:
        return train_size
    logger.info("The split of %d samples leaves no validation sample: training on all.", n_obs)
    return 1.0


@contextlib.contextmanager
def _scvi_seed(seed: int) -> Iterator[None]:
    """Set ``scvi.settings.seed`` for the duration of a call, then restore it."""
    previous = scvi.settings.seed
    scvi.settings.seed = seed
    try:
        yield
    finally:
        scvi.settings.seed = previous


def _checkpointing(
    checkpoint_dir: str | os.PathLike | None,
    every_n_epochs: int | None,
    resume: bool,
    ckpt_path: str | os.PathLike | None,
) -> tuple[AtomicCheckpoint | None, str | None]:
    """Check the checkpoint arguments of ``train()``; return the callback and the file to resume.

    Parameters
    ----------
    checkpoint_dir, every_n_epochs, resume
        As in :meth:`TrainingMixin.train`.
    ckpt_path
        Lightning's ``ckpt_path`` among the trainer keyword arguments of ``train()``: it
        excludes ``resume`` and allows a ``checkpoint_dir`` that holds checkpoints.

    Returns
    -------
    The checkpoint callback (``None`` without ``checkpoint_dir``) and the checkpoint to resume
    from (``None`` for a fresh run).
    """
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, str | os.PathLike):
        msg = (
            "`checkpoint_dir` must be a path (str or os.PathLike), got "
            f"{type(checkpoint_dir).__name__} {checkpoint_dir!r}."
        )
        raise TypeError(msg)
    if not isinstance(resume, bool):
        msg = f"`resume` must be True or False, got {resume!r}."
        raise TypeError(msg)
    if checkpoint_dir is None:
        for name, value in (("every_n_epochs", every_n_epochs), ("resume", resume or None)):
            if value is not None:
                msg = f"`{name}={value!r}` needs a `checkpoint_dir`, got none."
                raise ValueError(msg)
        return None, None
    every_n_epochs = 1 if every_n_epochs is None else every_n_epochs
    check_positive_integers(every_n_epochs=every_n_epochs)
    directory = Path(checkpoint_dir)
    if directory.exists() and not directory.is_dir():
        msg = f"`checkpoint_dir` must be a directory, got the file {str(directory)!r}."
        raise NotADirectoryError(msg)
    checkpoint = AtomicCheckpoint(directory, int(every_n_epochs))
    found = checkpoint_files(directory)
    if resume:
        if ckpt_path is not None:
            msg = (
                "Give either `resume=True` (the newest checkpoint in `checkpoint_dir`) or "
                f"`ckpt_path`, got both (`ckpt_path={ckpt_path!r}`)."
            )
            raise ValueError(msg)
        if not found:
            state = "holds no checkpoint" if directory.is_dir() else "does not exist"
            msg = (
                f"`resume=True` needs a checkpoint in `checkpoint_dir`, but {str(directory)!r} "
                f"{state} (expected files named 'epoch=E-step=S.ckpt', as `train` writes "
                "them); train without `resume` to start afresh."
            )
            raise FileNotFoundError(msg)
        return checkpoint, str(found[-1])
    if found and ckpt_path is None:
        msg = (
            f"`checkpoint_dir` {str(directory)!r} already holds checkpoints "
            f"({', '.join(path.name for path in found)}); pass `resume=True` to continue "
            "from the newest, or choose an empty directory."
        )
        raise FileExistsError(msg)
    return checkpoint, None


def _hold_out_default_validation(n_obs: int, trainer_kwargs: dict[str, Any]) -> None:
    """Split the samples as :func:`~gexbert_sc.data.default_validation_indices` says.

    The split goes into ``trainer_kwargs["datasplitter_kwargs"]`` (other data splitter
    arguments given there are kept; an ``external_indexing`` given there wins).
    """
    validation = default_validation_indices(n_obs)
    if len(validation) == 0:
        return
    training = np.setdiff1d(np.arange(n_obs), validation)
    splitter = dict(trainer_kwargs.get("datasplitter_kwargs") or {})
    splitter.setdefault("external_indexing", [training, validation])
    trainer_kwargs["datasplitter_kwargs"] = splitter


class TrainingMixin(UnsupervisedTrainingMixin):
    """``train()`` for every GexBERT model.

    The plan is the class's ``_training_plan_cls``; the objective is the module's (its
    ``training_encoding`` and ``loss``).
    """

    _training_plan_cls = GexBERTTrainingPlan
    _train_runner_cls = GexBERTTrainRunner
    #: ``batch_size`` of :meth:`train` when none is given.
    _default_batch_size = 64

    def train(
        self,
        max_epochs: int | None = None,
        *,
        batch_size: int | None = None,
        lr: float = 1e-3,
        precision: Precision = "auto",
        early_stopping: bool | None = None,
        early_stopping_patience: int = 5,
        check_val_every_n_epoch: int = 1,
        train_size: float | None = None,
        validation_size: float | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        plan_kwargs: dict | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        every_n_epochs: int | None = None,
        resume: bool = False,
        **trainer_kwargs,
    ) -> None:
        """Train with the module's objective (pretraining: masked restoration).

        Parameters
        ----------
        max_epochs
            Passes over the training samples, at most (with early stopping); ``None`` uses
            :func:`default_max_epochs`.
        batch_size
            Minibatch size (default 64; 256 for :class:`~gexbert_sc.GexBERTSurvival`, whose
            Cox risk sets are formed within a minibatch).
        lr
            Peak AdamW learning rate (warm-up then cosine decay).
        precision
            ``"auto"`` (bf16 autocast where the hardware runs it natively, else fp32),
            ``"32-true"``, ``"bf16-mixed"`` or ``"16-mixed"``.
        early_stopping
            Stop once ``validation_loss`` (the restoration loss of the validation samples,
            on the same masks every epoch; a task model's own loss) has not improved for
            ``early_stopping_patience`` validations in a row, then put back the weights of
            the epoch with the lowest ``validation_loss``
            (:class:`~gexbert_sc.train.RestoreBestWeights`; the epoch is logged). ``None``
            (default): on whenever the split leaves validation samples, off otherwise (fewer
            than 10 samples, ``train_size=1.0``) and with several processes
            (``strategy="ddp"``), where scvi-tools does not stop early. ``True``: on, and
            refused without validation samples. ``False``: every epoch is run and the last
            weights are kept. ``early_stopping_min_delta`` (default 0.0, an absolute
            improvement) can be given in ``trainer_kwargs``.
        early_stopping_patience
            Validations without improvement before training stops (default 5).
        check_val_every_n_epoch
            Validation frequency; the validation loss is computed with masking on. Ignored
            when ``train_size=1.0`` (no validation samples).
        train_size, validation_size
            Split of the samples (:class:`scvi.dataloaders.DataSplitter`). By default
            (both ``None``) the 10 % of :func:`~gexbert_sc.data.default_validation_indices`
            validate and the rest train: the samples the per-gene statistics were fitted
            without, the same for every seed, so that the validation loss (and what is
            fitted on it) is measured on samples no part of the model has seen. Given
            either, scvi-tools draws a random split from the seed. When the split would
            leave no validation sample (fewer than 10 samples), every sample is trained on
            (``train_size=1.0``).
        accelerator, devices
            Passed to Lightning (``"cpu"``, ``"gpu"``, ``"auto"``; devices and strategies).
            Several devices or machines train with ``strategy="ddp"`` (``"ddp_notebook"`` in
            a notebook) and ``num_nodes`` in ``trainer_kwargs``; ``batch_size`` is then per
            process (see the distributed training page of the documentation).
        plan_kwargs
            Passed to :class:`~gexbert_sc.train.GexBERTTrainingPlan`.
        checkpoint_dir
            Directory for Lightning checkpoints of the run, written at the end of every
            ``every_n_epochs``-th epoch as ``epoch=E-step=S.ckpt`` (``E`` 0-based). Only the
            newest is kept (and, as Lightning does, the one a run resumed from). A checkpoint
            holds the weights, the optimiser and learning-rate schedule states, the epoch and
            step counters, the seed and the random generators' states (the plan's and
            torch's global one, which shuffles the minibatches and draws dropout) of every
            process and, with early stopping, its state and the best weights so far. Each
            file is written under a temporary name in the directory and then renamed, so a
            killed run never leaves a truncated checkpoint. A fresh run refuses a directory that
            already holds checkpoints.
        every_n_epochs
            Epochs between checkpoints (default 1); needs ``checkpoint_dir``.
        resume
            Continue from the newest checkpoint in ``checkpoint_dir`` (which must hold one)
            until ``max_epochs``. Build the model as for the interrupted run (same data and
            ``seed``; another seed is refused) and give the same ``max_epochs``,
            ``batch_size``, ``lr``, split, early stopping arguments, ``plan_kwargs`` and
            number of processes (another is refused): on CPU with ``precision="32-true"``
            the final weights then equal those of an uninterrupted run, bit for bit, in
            every process. ``history`` holds only the resumed epochs. Lightning's ``ckpt_path`` (in
            ``trainer_kwargs``) resumes from a given checkpoint file instead.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (e.g. ``enable_progress_bar=False``);
            ``gradient_clip_val`` defaults to 1.0.

        Raises
        ------
        RuntimeError
            If a training loss or gradient is NaN or infinite; training stops before that
            step's update, so the weights are those after the last finite step.
        ~gexbert_sc.train.DistributedTrainingError
            With several processes, in every process but the one that failed (which raises
            its own error): the failed process's rank, error type and message.
        TypeError
            If ``checkpoint_dir`` is not a path, ``resume`` not a bool, or
            ``early_stopping`` not None or a bool.
        ValueError
            If ``early_stopping=True`` and the split leaves no validation sample,
            ``early_stopping_patience`` or ``every_n_epochs`` is not a positive integer,
            ``every_n_epochs`` or ``resume=True`` come without ``checkpoint_dir``,
            ``resume=True`` comes with ``ckpt_path``, or the checkpoint was written with
            another seed or number of processes.
        FileNotFoundError
            If ``resume=True`` and ``checkpoint_dir`` holds no checkpoint.
        FileExistsError
            If a fresh run (no ``resume``, no ``ckpt_path``) is given a ``checkpoint_dir``
            that holds checkpoints.
        NotADirectoryError
            If ``checkpoint_dir`` is a file.

        Examples
        --------
        >>> model.train(max_epochs=50, checkpoint_dir="run1")  # doctest: +SKIP
        >>> # killed at epoch 30; in a new session, a model built the same way:
        >>> model.train(max_epochs=50, checkpoint_dir="run1", resume=True)  # doctest: +SKIP
        """
        if max_epochs is None:
            max_epochs = default_max_epochs(self.adata.n_obs)
        if batch_size is None:
            batch_size = self._default_batch_size
        check_positive_integers(
            max_epochs=max_epochs,
            batch_size=batch_size,
            early_stopping_patience=early_stopping_patience,
        )
        if not is_finite_number(lr) or lr <= 0:
            msg = f"`lr` must be a positive finite number, got {lr!r}."
            raise ValueError(msg)
        distributed = use_distributed_sampler(trainer_kwargs.get("strategy"))
        early_stopping, train_size = _early_stopping(
            early_stopping, self.adata.n_obs, train_size, validation_size, distributed
        )
        checkpoint, resume_from = _checkpointing(
            checkpoint_dir, every_n_epochs, resume, trainer_kwargs.get("ckpt_path")
        )
        if resume_from is not None:
            trainer_kwargs["ckpt_path"] = resume_from
            logger.info("Resuming training from %s.", resume_from)
        on_gpu = accelerator in ("gpu", "cuda") or (
            accelerator == "auto" and torch.cuda.is_available()
        )
        resolved = resolve_precision(precision, on_gpu)
        trainer_kwargs.setdefault("gradient_clip_val", 1.0)
        trainer_kwargs.setdefault("early_stopping_monitor", "validation_loss")
        # scvi-tools does not stop early with DDP (it warns where `early_stopping=True`)
        if early_stopping and not distributed:
            callbacks = trainer_kwargs.get("callbacks") or []
            trainer_kwargs["callbacks"] = [
                *([callbacks] if isinstance(callbacks, Callback) else callbacks),
                RestoreBestWeights(trainer_kwargs["early_stopping_monitor"]),
            ]
            logger.info(
                "Training for at most %d epochs, stopping after %d without improvement of %s "
                "(precision %s).",
                max_epochs,
                early_stopping_patience,
                trainer_kwargs["early_stopping_monitor"],
                resolved,
            )
        else:
            logger.info("Training for %d epochs (precision %s).", max_epochs, resolved)
        if train_size is None and validation_size is None:
            _hold_out_default_validation(self.adata.n_obs, trainer_kwargs)
        # the getters leave the module in eval mode, and Lightning does not switch it back
        self.module.train()
        with _scvi_seed(self.seed_), warnings.catch_warnings():
            if resume_from is not None:  # the directory holds the checkpoint resumed from
                warnings.filterwarnings("ignore", "Checkpoint directory .* is not empty")
            # a last training batch of 1-2 samples is harmless here (no batch statistics)
            warnings.filterwarnings("ignore", "Last batch will have a small size")
            super().train(
                max_epochs=max_epochs,
                batch_size=batch_size,
                early_stopping=early_stopping,
                early_stopping_patience=early_stopping_patience,
                train_size=train_size,
                validation_size=validation_size,
                accelerator=accelerator,
                devices=devices,
                plan_kwargs={"lr": lr, "seed": self.seed_, **(plan_kwargs or {})},
                # without validation samples Lightning refuses a validation frequency
                check_val_every_n_epoch=None if train_size == 1.0 else check_val_every_n_epoch,
                precision=resolved,
                checkpoint=checkpoint,
                **trainer_kwargs,
            )
        self._after_training()

    def _after_training(self) -> None:
        """Fit what depends on the trained weights (nothing here; see subclasses)."""
