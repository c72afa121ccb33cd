"""scvi-tools' train runner with a checkpoint callback and one outcome for all processes."""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint
from scvi.train import TrainRunner

from gexbert_sc.train._distributed import shared_outcome


class GexBERTTrainRunner(TrainRunner):
    """:class:`scvi.train.TrainRunner` with a checkpoint callback, failing in every process.

    - scvi's :class:`~scvi.train.Trainer` adds its own ``SaveCheckpoint`` (which monitors
      ``validation_loss`` and saves whole models) whenever Lightning checkpointing is
      enabled, and Lightning refuses a ``ModelCheckpoint`` while checkpointing is disabled;
      adding the callback once the trainer is built avoids both.
    - With several processes, a run that fails in one process fails in all of them
      (:func:`~gexbert_sc.train._distributed.shared_outcome`), including a failure after
      Lightning's fit, while the runner moves the model to its device.

    Parameters
    ----------
    *args
        Passed to :class:`scvi.train.TrainRunner`.
    checkpoint
        The callback to add, if any.
    **kwargs
        Passed to :class:`scvi.train.TrainRunner`.
    """

    def __init__(self, *args, checkpoint: ModelCheckpoint | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if checkpoint is not None:
            self.trainer.callbacks.append(checkpoint)

    def __call__(self) -> None:
        """Run training; raise in every process if it failed in one."""
        with shared_outcome(self.trainer.world_size):
            super().__call__()
