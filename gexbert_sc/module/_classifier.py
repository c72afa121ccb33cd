"""GexBERT with a classification head on the ``[CLS]`` embedding, trained on random panels."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from scvi.module.base import LossOutput

from gexbert_sc._constants import REGISTRY_KEYS
from gexbert_sc.module._task import HEAD_KEY, GexBERTTaskModule


class GexBERTClassifierModule(GexBERTTaskModule):
    """The GexBERT encoder with a class-logit head, trained on random panels.

    Panel dropout, freezing and parameter groups are those of
    :class:`~gexbert_sc.module.GexBERTTaskModule`; the loss is the class-weighted
    cross-entropy of the labelled samples.

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
    **kwargs
        Arguments of :class:`~gexbert_sc.module.GexBERTTaskModule` (head, panel dropout,
        freezing) and of :class:`~gexbert_sc.module.GexBERTModule` (the architecture).
    """

    def __init__(
        self,
        n_vars: int,
        n_batch: int = 1,
        *,
        n_classes: int,
        class_weights: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        super().__init__(n_vars, n_batch, n_outputs=n_classes, **kwargs)
        self.n_classes = n_classes
        weights = torch.ones(n_classes) if class_weights is None else class_weights.float()
        self.register_buffer("class_weights", weights)

    def loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """Class-weighted cross-entropy over the labelled samples of the minibatch.

        A label code ``>= n_classes`` (the unlabelled category) takes no part in the loss.
        """
        logits = generative_outputs[HEAD_KEY].float()
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
