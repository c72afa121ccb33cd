"""Lightning training plan: the module's encodings, one generator, AdamW with warm-up + cosine."""

from __future__ import annotations

import math

import torch
from scvi.module.base import LossOutput
from scvi.train import TrainingPlan

from gexbert_sc._constants import REGISTRY_KEYS
from gexbert_sc.module import GexBERTModule

#: Key of the random states in a Lightning checkpoint: one dict per process (by global rank),
#: ``{"generator": the training generator's state or None, "cpu": torch's global CPU state,
#: "cuda": torch's CUDA states, one per device once CUDA is used, else []}``.
RNG_STATES_KEY = "gexbert_rng_states"
#: Key of the plan's seed in a checkpoint.
SEED_KEY = "gexbert_seed"


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
    """Training plan for :class:`~gexbert_sc.module.GexBERTModule` and task modules built on it.

    Differs from :class:`scvi.train.TrainingPlan` in four ways:

    - the optimiser is AdamW (``eps=1e-8``, ``weight_decay=0.01``; torch's fused kernel
      unless fp16's loss scaler is in use) rather than Adam with ``eps=0.01``;
    - the learning rate warms up linearly over ``warmup_fraction`` of the steps, then follows
      a cosine decay;
    - the module decides how a step encodes its samples: training steps use
      ``module.training_encoding``, validation steps ``module.validation_encoding`` (for
      pretraining both hide genes, so ``validation_loss`` is a real restoration loss);
    - every random draw of the encoding (context, hidden genes, targets) comes from one
      :class:`torch.Generator` seeded with ``seed``, whose state is saved in Lightning
      checkpoints and restored from them. Validation draws from a second generator re-seeded
      at every validation epoch, so that validation losses of different epochs are computed
      on the same masks and validating does not shift the training draws. (Dropout, off by
      default, and the data loader's shuffling draw from torch's global RNG, which
      ``train()`` seeds; checkpoints hold its state too, so a resumed run shuffles as the
      uninterrupted one.) With several processes, each process's states are saved and
      resumed under its rank.

    A training step whose loss or gradients are not finite raises a :class:`RuntimeError`
    before the optimiser step, so the weights stay those of the last finite step. A
    checkpoint written with another ``seed`` is refused (:class:`ValueError`).

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
    seed
        Seed of the training and validation generators.
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
        seed: int = 0,
        **kwargs,
    ):
        kwargs.setdefault("optimizer", "AdamW")
        kwargs.setdefault("eps", 1e-8)
        super().__init__(module, lr=lr, weight_decay=weight_decay, **kwargs)
        self.warmup_fraction = warmup_fraction
        self.seed = seed
        self._generators: dict[str, torch.Generator] = {}
        self._restored_state: torch.Tensor | None = None

    def generator(self, phase: str, device: torch.device) -> torch.Generator:
        """Return the generator of ``phase`` (``"train"`` or ``"validation"``) on ``device``.

        Created on first use, seeded with ``seed`` (``seed + 1`` for validation); a training
        generator state loaded from a checkpoint is applied then.
        """
        generator = self._generators.get(phase)
        if generator is None or generator.device != torch.device(device):
            generator = torch.Generator(device).manual_seed(self.seed + (phase != "train"))
            if phase == "train" and self._restored_state is not None:
                generator.set_state(self._restored_state)
                self._restored_state = None
            self._generators[phase] = generator
        return generator

    def forward(self, batch: dict[str, torch.Tensor], **kwargs) -> tuple:
        """Run the module with the encoding of the current phase and its generator."""
        if self.module.training:
            phase, encoding = "train", self.module.training_encoding
        else:
            phase, encoding = "validation", self.module.validation_encoding
        device = batch[REGISTRY_KEYS.X_KEY].device
        kwargs["inference_kwargs"] = {
            "encoding": {**encoding, "generator": self.generator(phase, device)},
            **kwargs.get("inference_kwargs", {}),
        }
        return super().forward(batch, **kwargs)

    def on_validation_epoch_start(self) -> None:
        """Re-seed the validation generator: every epoch validates on the same masks."""
        self._generators.pop("validation", None)

    def _process(self) -> tuple[int, int]:
        """Return the run's process count and this process's rank ((1, 0) without a trainer)."""
        trainer = self._trainer
        return (1, 0) if trainer is None else (trainer.world_size, trainer.global_rank)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the seed and every process's random states (training generator, torch's).

        Every process calls this hook (Lightning writes the file from rank 0 only), so with
        several processes the states are gathered from all of them: each process draws its
        own dropout masks and may have drawn a different number of random numbers.
        """
        checkpoint[SEED_KEY] = self.seed
        generator = self._generators.get("train")
        states = {
            "generator": None if generator is None else generator.get_state(),
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        }
        world_size, _ = self._process()
        if world_size > 1:
            gathered: list[dict | None] = [None] * world_size
            torch.distributed.all_gather_object(gathered, states)
            checkpoint[RNG_STATES_KEY] = gathered
        else:
            checkpoint[RNG_STATES_KEY] = [states]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore this process's training generator and torch's random states.

        CUDA states are restored when the checkpoint holds one per visible device.

        Raises
        ------
        ValueError
            If the checkpoint was written with another seed (the train/validation split,
            drawn from the seed, would differ) or by a run on another number of processes
            (each process's random states belong to its rank).
        """
        saved_seed = checkpoint.get(SEED_KEY, self.seed)
        if saved_seed != self.seed:
            msg = (
                f"The checkpoint was written by a run with seed {saved_seed}, but this run's "
                f"seed is {self.seed}: its train/validation split and random draws would "
                f"differ. Resume with a model created with `seed={saved_seed}`."
            )
            raise ValueError(msg)
        all_states = checkpoint.get(RNG_STATES_KEY)
        self._generators.pop("train", None)
        if all_states is None:
            return
        world_size, rank = self._process()
        if len(all_states) != world_size:
            msg = (
                f"The checkpoint was written by a run on {len(all_states)} processes, but "
                f"this run has {world_size}: every process resumes the random states of its "
                f"own rank. Resume with {len(all_states)} processes (`devices` x "
                "`num_nodes`), or train afresh."
            )
            raise ValueError(msg)
        states = all_states[rank]
        self._restored_state = states["generator"]
        torch.set_rng_state(states["cpu"])
        if states["cuda"] and len(states["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states["cuda"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Compute and log the loss of a training minibatch; refuse a non-finite one.

        With several processes (``strategy="ddp"``) the check is reduced over all of them,
        so every process raises together rather than the others waiting for its gradients.

        Raises
        ------
        RuntimeError
            If the loss is NaN or infinite (raised before the backward pass, so the weights
            are those after the last finite step).
        """
        loss = super().training_step(batch, batch_idx)
        if not self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss))):
            found = f"the training loss is {loss.item()}"
            if self.trainer.world_size > 1:
                found += f" in process {self.global_rank}, not finite in at least one process"
            self._stop_non_finite(found)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Refuse non-finite gradients before they are clipped and the optimiser steps.

        A finite loss can still give NaN or infinite gradients (e.g. once the weights have
        grown huge), which gradient clipping and AdamW would spread to every weight. With
        ``precision="16-mixed"`` the gradient scaler skips such steps itself (that is how it
        tunes the loss scale), so they are not refused.

        Raises
        ------
        RuntimeError
            If a gradient holds a NaN or infinite value.
        """
        if self._loss_scaler() is not None:
            return
        grads = [
            param.grad
            for group in optimizer.param_groups
            for param in group["params"]
            if param.grad is not None
        ]
        # one multi-tensor norm: NaN or infinite as soon as one gradient entry is
        if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            self._stop_non_finite("a gradient is NaN or infinite (the loss is finite)")

    def _stop_non_finite(self, found: str) -> None:
        """Raise the :class:`RuntimeError` of a non-finite training step, ``found`` its cause."""
        msg = (
            f"Training stopped at epoch {self.current_epoch}, optimiser step "
            f"{self.global_step}: {found}. The step's update was not applied, so the "
            "weights are those after the last finite step. Likely causes: a learning rate "
            f"too high (peak `lr`={self.lr}; the loss diverged), or extreme values in the "
            "input. Train again with a lower `lr` (e.g. 10 times lower) or "
            '`precision="32-true"`, or check the data.'
        )
        raise RuntimeError(msg)

    def _loss_scaler(self) -> torch.amp.GradScaler | None:
        """Return the gradient scaler of ``precision="16-mixed"`` (``None`` in fp32 and bf16)."""
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip gradients (``gradient_clip_val``, by norm or by value) before the step.

        Lightning's mixed-precision plugin refuses to clip for any fused optimiser, since
        one that unscales fp16 gradients inside its step would be clipped on scaled values.
        bf16 autocast has no loss scaler, so here the gradients are the true ones and are
        clipped as in fp32; with fp16's scaler the optimiser is not fused and Lightning clips.
        """
        if self._loss_scaler() is not None or not gradient_clip_val:
            super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )
            return
        params = [param for group in optimizer.param_groups for param in group["params"]]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def compute_and_log_metrics(self, loss_output: LossOutput, metrics: dict, mode: str) -> None:
        """Log scvi-tools' metrics and the module's extra metrics, under ``no_grad``.

        scvi-tools runs this under :func:`torch.inference_mode`, so the tensors in which
        Lightning accumulates the module's extra metrics (e.g. ``masked_mse_train``) become
        inference tensors; with several processes (``strategy="ddp"``) Lightning's epoch-end
        all-reduce updates them in place outside inference mode, which torch refuses
        ("Inplace update to inference tensor outside InferenceMode"). ``no_grad`` keeps the
        logged values out of the autograd graph as well.
        """
        with torch.no_grad():
            TrainingPlan.compute_and_log_metrics.__wrapped__(self, loss_output, metrics, mode)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Compute and log the loss of a validation minibatch."""
        _, _, loss_output = self.forward(batch, loss_kwargs=self.loss_kwargs)
        self.log(
            "validation_loss",
            loss_output.loss,
            on_epoch=True,
            batch_size=loss_output.n_obs_minibatch,
            sync_dist=self.use_sync_dist,
        )
        self.compute_and_log_metrics(loss_output, self.val_metrics, "validation")

    def configure_optimizers(self) -> dict:
        """AdamW (fused) over trainable parameters with a per-step warm-up + cosine schedule.

        A module with a ``parameter_groups(lr)`` method (a task module) gives its own groups,
        e.g. a lower learning rate for a pretrained encoder.
        """
        if hasattr(self.module, "parameter_groups"):
            params = self.module.parameter_groups(self.lr)
        else:
            params = [p for p in self.module.parameters() if p.requires_grad]
        if self.optimizer_name == "AdamW" and self._loss_scaler() is None:
            # the fused kernel: one pass over all parameters (5x faster than the loop or
            # `foreach` implementation on CPU; the same update up to float rounding). With
            # fp16's loss scaler, Lightning unscales before clipping only for unfused ones.
            optimizer = torch.optim.AdamW(
                params, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay, fused=True
            )
        else:
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
