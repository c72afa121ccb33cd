"""Lightning training plan: masked validation, AdamW with warm-up and cosine decay."""

from __future__ import annotations

import math

import torch
from scvi.train import TrainingPlan

from gexbert_sc.module import GexBERTModule


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to 0 at ``total_steps``.

    Parameters
    ----------
    step
        Optimiser step (0-based).
    warmup_steps
        Steps of linear warm-up.
    total_steps
        Step at which the factor reaches 0.

    Returns
    -------
    The multiplier applied to the base learning rate.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class GexBERTTrainingPlan(TrainingPlan):
    """Training plan for :class:`~gexbert_sc.module.GexBERTModule`.

    Differs from :class:`scvi.train.TrainingPlan` in three ways: the optimiser is AdamW
    (``eps=1e-8``, ``weight_decay=0.01``) rather than Adam with ``eps=0.01``; the learning rate
    warms up linearly over ``warmup_fraction`` of the steps and then follows a cosine decay;
    and validation hides genes too, so ``validation_loss`` is a real restoration loss (with
    masking tied to ``module.training`` it would be 0).

    Parameters
    ----------
    module
        The module to train.
    lr
        Peak learning rate.
    weight_decay
        AdamW weight decay.
    warmup_fraction
        Fraction of the optimiser steps spent warming up (at most 1,000 steps).
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan`.
    """

    def __init__(
        self,
        module: GexBERTModule,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_fraction: float = 0.05,
        **kwargs,
    ):
        kwargs.setdefault("optimizer", "AdamW")
        kwargs.setdefault("eps", 1e-8)
        super().__init__(module, lr=lr, weight_decay=weight_decay, **kwargs)
        self.warmup_fraction = warmup_fraction

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Compute and log the masked restoration loss on a validation minibatch."""
        _, _, loss_output = self.forward(batch, inference_kwargs={"apply_mask": True})
        self.log(
            "validation_loss",
            loss_output.loss,
            on_epoch=True,
            batch_size=loss_output.n_obs_minibatch,
            sync_dist=self.use_sync_dist,
        )
        self.compute_and_log_metrics(loss_output, self.val_metrics, "validation")

    def configure_optimizers(self) -> dict:
        """AdamW over trainable parameters with a per-step warm-up + cosine schedule."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        optimizer = self.get_optimizer_creator()(params)
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        warmup_steps = max(1, min(1000, round(self.warmup_fraction * total_steps)))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
