"""What a gene attribution explains: one score per sample, read from the encoder's outputs."""

from __future__ import annotations

import numpy as np
import torch

from gexbert_sc._constants import MODULE_KEYS
from gexbert_sc.module._presence import VALUES_KEY


class ImportanceTarget:
    """A per-sample score of the encoder's outputs, and the per-sample tensors it needs.

    :meth:`info` reads those tensors from the sample as measured (e.g. the predicted class);
    :meth:`score` is then computed on any reading of the sample (genes present, missing or
    weighed) with the same ``info``, so that every method explains the same number.
    """

    #: The name recorded in the results.
    name = "score"
    #: Whether a gene's importance is the size of its attributions (their sign varies from
    #: sample to sample in a meaningful way, as a gene raises one patient's risk and lowers
    #: another's) rather than their signed mean.
    by_magnitude = False

    def info(
        self, module: torch.nn.Module, full: dict, rows: np.ndarray
    ) -> tuple[torch.Tensor, ...]:
        """Per-sample tensors of the score, from the encoder outputs ``full`` of the samples.

        Parameters
        ----------
        module
            The model's module.
        full
            Outputs of :meth:`~gexbert_sc.module.ExpressionEncoder.encode_samples` (fixed
            context) of the minibatch as measured, plus its log values under ``"values"``.
        rows
            Positions of the minibatch's samples among the samples explained.

        Returns
        -------
        A tuple of tensors with one row per sample (empty by default).
        """
        return ()

    def score(self, module: torch.nn.Module, out: dict, *info: torch.Tensor) -> torch.Tensor:
        """Return the ``(B,)`` score of the encoder outputs ``out``."""
        raise NotImplementedError

    def readout(self, score: torch.Tensor) -> torch.Tensor:
        """Return the score in the units a deletion curve reports (the score itself here)."""
        return score


class ClassProbability(ImportanceTarget):
    """A classifier's probability of one class per sample, as log-odds.

    The score is ``log(p / (1 - p))`` of the class: the probability itself saturates near 1,
    where a confident prediction hides every gene from gradients and makes integrated
    gradients' quadrature fail; its log-odds keep rising with evidence.

    Parameters
    ----------
    classes
        Class code of each sample explained (``None``: the class each sample is predicted
        as when read as measured).
    """

    name = "class_log_odds"

    def __init__(self, classes: np.ndarray | None = None):
        self.classes = classes

    def info(self, module, full, rows):
        """Return the class explained for each sample of the minibatch."""
        if self.classes is None:
            return (module.head(full[MODULE_KEYS.Z_KEY]).argmax(1),)
        return (torch.as_tensor(self.classes[rows], device=full[MODULE_KEYS.Z_KEY].device),)

    def score(self, module, out, *info):
        """Log-odds of each sample's class: its logit minus the log-sum-exp of the others."""
        logits = module.head(out[MODULE_KEYS.Z_KEY]).float()
        chosen = torch.zeros_like(logits, dtype=torch.bool)
        chosen.scatter_(1, info[0].view(-1, 1).long(), True)
        own = logits.masked_fill(~chosen, 0.0).sum(1)
        return own - logits.masked_fill(chosen, -torch.inf).logsumexp(1)

    def readout(self, score: torch.Tensor) -> torch.Tensor:
        """Return the class probability of the log-odds."""
        return torch.sigmoid(score)


class HeadOutput(ImportanceTarget):
    """A one-output head's value (the survival model's log relative hazard)."""

    name = "risk"
    by_magnitude = True

    def score(self, module, out, *info):
        """Return the head's first output."""
        return module.head(out[MODULE_KEYS.Z_KEY])[:, 0].float()


class EmbeddingShift(ImportanceTarget):
    """How far a sample's embedding stands out from the mean, along its own direction.

    The score is ``⟨z - z̄, u⟩`` with ``u`` the unit vector of ``z - z̄`` of the sample as
    measured: reading a gene as missing lowers it as far as the embedding moves back toward
    the mean (Geneformer's in-silico deletion reads the embedding's shift the same way).

    Parameters
    ----------
    centre
        ``(d,)`` mean embedding of the samples explained.
    """

    name = "embedding"

    def __init__(self, centre: torch.Tensor):
        self.centre = centre

    def info(self, module, full, rows):
        """Each sample's unit direction from the mean embedding."""
        away = full[MODULE_KEYS.Z_KEY].float() - self.centre.to(full[MODULE_KEYS.Z_KEY].device)
        return (away / away.norm(dim=1, keepdim=True).clamp_min(1e-12),)

    def score(self, module, out, *info):
        """Projection of the embedding's distance from the mean on the sample's direction."""
        z = out[MODULE_KEYS.Z_KEY].float()
        return ((z - self.centre.to(z.device)) * info[0]).sum(1)


class RestorationError(ImportanceTarget):
    """Minus the mean squared error of restoring every gene the sample measured (log scale).

    A gene whose presence lowers the restoration error of the sample's profile (itself
    included) gets a positive attribution.
    """

    name = "restoration"

    def info(self, module, full, rows):
        """Return the measured log values and which genes were measured."""
        return full[VALUES_KEY].float(), full[MODULE_KEYS.OBSERVED_KEY].float()

    def score(self, module, out, *info):
        """``-mean((restored - measured)²)`` over the measured genes."""
        values, observed = info
        genes = torch.arange(values.shape[1], device=values.device)
        restored = module.restore(
            out[MODULE_KEYS.MEMORY_KEY],
            out[MODULE_KEYS.MEMORY_PAD_KEY],
            genes,
            out[MODULE_KEYS.BATCH_KEY],
            out[MODULE_KEYS.PROFILE_COEF_KEY],
        )
        error = ((restored.float() - values) ** 2 * observed).sum(1)
        return -error / observed.sum(1).clamp_min(1)
