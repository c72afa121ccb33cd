"""Task heads that read the ``[CLS]`` sample embedding."""

from __future__ import annotations

import torch
from torch import nn


class ClassifierHead(nn.Module):
    """Two-layer perceptron from the sample embedding to class logits.

    Parameters
    ----------
    d_model
        Width of the sample embedding.
    n_classes
        Number of classes.
    n_hidden
        Width of the hidden layer.
    dropout
        Dropout before each linear layer.
    """

    def __init__(self, d_model: int, n_classes: int, n_hidden: int = 128, dropout: float = 0.1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(d_model, n_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(n_hidden, n_classes),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Return the ``(B, n_classes)`` logits of embeddings ``z`` (``(B, d_model)``)."""
        return self.layers(z)
