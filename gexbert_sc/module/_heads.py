"""Task heads that read the ``[CLS]`` sample embedding."""

from __future__ import annotations

import torch
from torch import nn


class MLPHead(nn.Module):
    """Two-layer perceptron from the sample embedding to a task's outputs.

    The classifier reads class logits from it, the survival model a log hazard.

    Parameters
    ----------
    d_model
        Width of the sample embedding.
    n_outputs
        Number of outputs (classes; 1 for a log hazard).
    n_hidden
        Width of the hidden layer.
    dropout
        Dropout before each linear layer.
    """

    def __init__(self, d_model: int, n_outputs: int, n_hidden: int = 128, dropout: float = 0.1):
        super().__init__()
        self.n_outputs = n_outputs
        self.layers = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(d_model, n_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(n_hidden, n_outputs),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Return the ``(B, n_outputs)`` outputs of embeddings ``z`` (``(B, d_model)``)."""
        return self.layers(z)
