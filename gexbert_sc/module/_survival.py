"""GexBERT with a Cox proportional-hazards head on ``[CLS]``, trained on random panels."""

from __future__ import annotations

import warnings
from typing import Any, Literal

from scvi.module.base import LossOutput
from torchsurv.loss.cox import neg_partial_log_likelihood

from gexbert_sc._constants import REGISTRY_KEYS
from gexbert_sc.module._task import HEAD_KEY, GexBERTTaskModule

Ties = Literal["efron", "breslow"]


class GexBERTSurvivalModule(GexBERTTaskModule):
    """The GexBERT encoder with a log-hazard head, trained by the Cox partial likelihood.

    Panel dropout, freezing and parameter groups are those of
    :class:`~gexbert_sc.module.GexBERTTaskModule`. The head's single output is the log
    relative hazard (the risk). The loss is the negative Cox partial log-likelihood of the
    minibatch (``torchsurv``), averaged over its events: each event's risk set is the
    minibatch's samples still at risk at its time, so a minibatch stands in for the cohort
    and needs enough samples and events to rank (see :doc:`/survival`). A minibatch
    without an event, or of one sample, contributes nothing.

    Parameters
    ----------
    n_vars
        Vocabulary size (number of genes).
    n_batch
        Number of batches.
    ties
        How tied event times enter the partial likelihood: ``"efron"`` or ``"breslow"``.
    **kwargs
        Arguments of :class:`~gexbert_sc.module.GexBERTTaskModule` (head, panel dropout,
        freezing) and of :class:`~gexbert_sc.module.GexBERTModule` (the architecture).
    """

    def __init__(self, n_vars: int, n_batch: int = 1, *, ties: Ties = "efron", **kwargs: Any):
        super().__init__(n_vars, n_batch, n_outputs=1, **kwargs)
        self.ties = ties

    def loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """Negative Cox partial log-likelihood over the minibatch's risk sets."""
        log_hazard = generative_outputs[HEAD_KEY].float().view(-1)
        time = tensors[REGISTRY_KEYS.TIME_KEY].view(-1).float().to(log_hazard.device)
        event = tensors[REGISTRY_KEYS.EVENT_KEY].view(-1).to(log_hazard.device) > 0.5
        if event.any() and len(event) > 1:
            with warnings.catch_warnings():
                # torchsurv warns at every minibatch with tied times; `ties` is our choice
                warnings.filterwarnings("ignore", message="Ties in `time` detected")
                total = neg_partial_log_likelihood(
                    log_hazard, event, time, ties_method=self.ties, reduction="sum"
                )
            # per event (torchsurv's "mean" divides by the distinct event times under ties)
            loss = total / event.sum()
        else:
            loss = log_hazard.sum() * 0.0
        return LossOutput(
            loss=loss,
            n_obs_minibatch=log_hazard.shape[0],
            extra_metrics={"partial_likelihood": loss.detach()},
        )
