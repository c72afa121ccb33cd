"""The pretrained GexBERT encoder with a task head on ``[CLS]``, trained on random panels."""

from __future__ import annotations

from typing import Any

import torch
from scvi.module.base import auto_move_data

from gexbert_sc._constants import MODULE_KEYS
from gexbert_sc.module._gexbert import GexBERTModule
from gexbert_sc.module._heads import MLPHead

#: Key of the head's outputs in the generative outputs.
HEAD_KEY = "head"


class GexBERTTaskModule(GexBERTModule):
    """Base of the task modules: an :class:`~gexbert_sc.module.MLPHead` on ``[CLS]``.

    Every training (and validation) step keeps a random *panel* of each sample's observed
    genes, log-uniform in size from ``min_panel_genes`` to all of them
    (:func:`~gexbert_sc.module._masking.withhold_outside_panel`), and reads a random context
    of it. Prediction reads the fixed inference context of whatever genes a sample has. The
    restoration decoder is kept (so that pretrained weights load) but frozen and unused.
    Subclasses define the ``loss`` of the head's outputs.

    Parameters
    ----------
    n_vars
        Vocabulary size (number of genes).
    n_batch
        Number of batches.
    n_outputs
        Outputs of the head.
    n_hidden
        Width of the head's hidden layer.
    head_dropout
        Dropout in the head.
    min_panel_genes
        Smallest panel kept by panel dropout.
    freeze_encoder
        Train the head only; the encoder's weights stay as pretrained.
    encoder_lr_scale
        Learning rate of the encoder relative to the head's when it is fine-tuned.
    **kwargs
        Arguments of :class:`~gexbert_sc.module.GexBERTModule` (the pretrained architecture).
    """

    def __init__(
        self,
        n_vars: int,
        n_batch: int = 1,
        *,
        n_outputs: int,
        n_hidden: int = 128,
        head_dropout: float = 0.1,
        min_panel_genes: int = 16,
        freeze_encoder: bool = False,
        encoder_lr_scale: float = 0.1,
        **kwargs: Any,
    ):
        super().__init__(n_vars, n_batch, **kwargs)
        self.min_panel_genes = min_panel_genes
        self.encoder_lr_scale = encoder_lr_scale
        self.head = MLPHead(self.d_model, n_outputs, n_hidden, head_dropout)
        head = {f"head.{name}" for name, _ in self.head.named_parameters()}
        for name, parameter in self.named_parameters():
            if name not in head:
                trainable = name in self.encoder_parameter_names and not freeze_encoder
                parameter.requires_grad_(trainable)

    @property
    def training_encoding(self) -> dict[str, Any]:
        """Random context of a random panel of each sample, nothing hidden, no targets."""
        return {"context": "random", "panel_min_genes": self.min_panel_genes}

    @property
    def validation_encoding(self) -> dict[str, Any]:
        """As in training: ``validation_loss`` is the loss on random panels."""
        return self.training_encoding

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """Trainable parameters for the optimiser: the head at ``lr``, the encoder lower.

        Parameters
        ----------
        lr
            The head's learning rate.

        Returns
        -------
        Optimiser parameter groups (``{"params": ..., "lr": ...}``).
        """
        head = list(self.head.parameters())
        head_ids = {id(p) for p in head}
        encoder = [p for p in self.parameters() if p.requires_grad and id(p) not in head_ids]
        groups = [{"params": head, "lr": lr}]
        if encoder:
            groups.append({"params": encoder, "lr": lr * self.encoder_lr_scale})
        return groups

    def _get_generative_input(self, tensors, inference_outputs, **kwargs) -> dict:
        return {MODULE_KEYS.Z_KEY: inference_outputs[MODULE_KEYS.Z_KEY]}

    @auto_move_data
    def generative(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the head's outputs for the sample embeddings."""
        return {HEAD_KEY: self.head(z)}
