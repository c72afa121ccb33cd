"""GexBERT with a classification head on the ``[CLS]`` embedding, trained on random panels."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from scvi.module.base import LossOutput, auto_move_data

from gexbert_sc._constants import MODULE_KEYS, REGISTRY_KEYS
from gexbert_sc.module._gexbert import GexBERTModule
from gexbert_sc.module._heads import ClassifierHead

#: Key of the class logits in the generative outputs.
LOGITS_KEY = "logits"


class GexBERTClassifierModule(GexBERTModule):
    """The GexBERT encoder with a :class:`~gexbert_sc.module.ClassifierHead` on ``[CLS]``.

    Every training (and validation) step keeps a random *panel* of each sample's observed
    genes, log-uniform in size from ``min_panel_genes`` to all of them
    (:func:`~gexbert_sc.module._masking.withhold_outside_panel`), and reads a random context
    of it; the loss is the class-weighted cross-entropy of the labelled samples. Prediction
    reads the fixed inference context of whatever genes a sample has. The restoration
    decoder is kept (so that pretrained weights load) but frozen and unused.

    Parameters
    ----------
    n_vars
        Vocabulary size (number of genes).
    n_batch
        Number of batches.
    n_classes
        Number of classes (the unlabelled category excluded).
    class_weights
        ``(n_classes,)`` weights of the cross-entropy (``None``: all 1).
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
        n_classes: int,
        class_weights: torch.Tensor | None = None,
        n_hidden: int = 128,
        head_dropout: float = 0.1,
        min_panel_genes: int = 16,
        freeze_encoder: bool = False,
        encoder_lr_scale: float = 0.1,
        **kwargs: Any,
    ):
        super().__init__(n_vars, n_batch, **kwargs)
        self.n_classes = n_classes
        self.min_panel_genes = min_panel_genes
        self.encoder_lr_scale = encoder_lr_scale
        self.classifier = ClassifierHead(self.d_model, n_classes, n_hidden, head_dropout)
        weights = torch.ones(n_classes) if class_weights is None else class_weights.float()
        self.register_buffer("class_weights", weights)
        head = {f"classifier.{name}" for name, _ in self.classifier.named_parameters()}
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
        head = list(self.classifier.parameters())
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
        """Class logits of the sample embeddings."""
        return {LOGITS_KEY: self.classifier(z)}

    def loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """Class-weighted cross-entropy over the labelled samples of the minibatch.

        A label code ``>= n_classes`` (the unlabelled category) takes no part in the loss.
        """
        logits = generative_outputs[LOGITS_KEY].float()
        labels = tensors[REGISTRY_KEYS.LABELS_KEY].view(-1).long()
        labelled = labels < self.n_classes
        targets = torch.where(labelled, labels, 0)
        per_sample = F.cross_entropy(logits, targets, weight=self.class_weights, reduction="none")
        weight = self.class_weights[targets] * labelled
        loss = (per_sample * labelled).sum() / weight.sum().clamp_min(1e-8)
        correct = (logits.argmax(dim=1) == labels) & labelled
        accuracy = correct.sum() / labelled.sum().clamp_min(1)
        return LossOutput(
            loss=loss,
            n_obs_minibatch=labels.shape[0],
            extra_metrics={"cross_entropy": loss.detach(), "accuracy": accuracy.detach()},
        )
