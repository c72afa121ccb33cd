"""GexBERTSurvivalModule: the Cox loss is lifelines' partial likelihood."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter

from gexbert_sc._constants import REGISTRY_KEYS
from gexbert_sc.module import GexBERTSurvivalModule
from gexbert_sc.module._task import HEAD_KEY


def _module(**kwargs) -> GexBERTSurvivalModule:
    edges = torch.linspace(0.5, 3.0, 6).expand(30, 6).clone()
    defaults = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_levels": 8, "n_context": 12}
    return GexBERTSurvivalModule(30, bin_edges=edges, **{**defaults, **kwargs})


def _tensors(time, event):
    return {
        REGISTRY_KEYS.TIME_KEY: torch.tensor(time, dtype=torch.float32).view(-1, 1),
        REGISTRY_KEYS.EVENT_KEY: torch.tensor(event, dtype=torch.float32).view(-1, 1),
    }


def test_loss_is_the_efron_partial_likelihood_of_lifelines():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    # times rounded to one decimal: many ties
    time = np.round(rng.exponential(np.exp(-x)), 1) + 0.1
    event = rng.random(60) < 0.7
    fitted = CoxPHFitter().fit(pd.DataFrame({"x": x, "t": time, "e": event}), "t", "e")
    log_hazard = torch.tensor(fitted.params_["x"] * x, dtype=torch.float32).view(-1, 1)
    loss = _module().loss(_tensors(time, event), {}, {HEAD_KEY: log_hazard}).loss
    # the loss is the mean over events of the negative partial log-likelihood
    assert -loss.item() * event.sum() == pytest.approx(fitted.log_likelihood_, rel=1e-5)


def test_minibatch_without_event_or_of_one_sample_contributes_nothing():
    module = _module()
    log_hazard = torch.randn(4, 1, requires_grad=True)
    censored = module.loss(_tensors([1, 2, 3, 4], [0, 0, 0, 0]), {}, {HEAD_KEY: log_hazard})
    single = module.loss(_tensors([1], [1]), {}, {HEAD_KEY: log_hazard[:1]})
    for out in (censored, single):
        assert out.loss.item() == 0.0
        out.loss.backward()
