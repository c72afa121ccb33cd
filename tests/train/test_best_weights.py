"""Early stopping: on by default with validation samples; it restores the best weights."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from helpers import TINY_MODEL, make_counts_adata
from lightning.pytorch.callbacks import EarlyStopping

from gexbert_sc import GexBERT
from gexbert_sc.model.base._training import _early_stopping
from gexbert_sc.train import GexBERTTrainingPlan, RestoreBestWeights

QUIET = {"batch_size": 32, "enable_progress_bar": False, "precision": "32-true"}


class WeightsProbe(pl.Callback):
    """Copies of the module's weights after every validation epoch."""

    def __init__(self):
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_validation_end(self, trainer, pl_module):
        state = pl_module.module.state_dict()
        self.weights.append({k: v.detach().clone() for k, v in state.items()})


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def model_on(n_obs: int = 120) -> GexBERT:
    adata = make_counts_adata(n_obs=n_obs, seed=3)
    GexBERT.setup_anndata(adata)
    return GexBERT(adata, **TINY_MODEL, seed=5)


@pytest.fixture
def scripted_validation_loss(monkeypatch):
    """Make ``validation_loss`` of epoch ``e`` equal ``losses[e]``; return ``losses``."""
    losses: list[float] = []

    def validation_step(self, batch, batch_idx):
        value = torch.tensor(losses[self.current_epoch])
        self.log("validation_loss", value, on_epoch=True, batch_size=1)

    monkeypatch.setattr(GexBERTTrainingPlan, "validation_step", validation_step)
    return losses


def test_early_stopping_stops_on_a_plateau_and_restores_the_best_weights(
    scripted_validation_loss, caplog
):
    # best at epoch 1; epoch 3 only ties it, which is no improvement
    scripted_validation_loss += [3.0, 1.0, 2.0, 1.0, 5.0] + [0.5] * 15
    probe = WeightsProbe()
    model = model_on()
    with caplog.at_level("INFO", logger="gexbert_sc"):
        model.train(max_epochs=20, early_stopping_patience=3, callbacks=[probe], **QUIET)
    assert len(model.history["train_loss"]) == 5  # epochs 2, 3 and 4 without improvement
    assert len(probe.weights) == 5
    assert same_weights(model.module.state_dict(), probe.weights[1])
    assert not same_weights(model.module.state_dict(), probe.weights[-1])
    assert "Restored the weights of epoch 1 (validation_loss 1)" in caplog.text


def test_early_stopping_on_the_real_loss_keeps_the_epoch_of_its_minimum():
    probe = WeightsProbe()
    model = model_on()
    # a high learning rate: the validation loss turns up after a few epochs
    model.train(max_epochs=12, lr=0.03, early_stopping_patience=2, callbacks=[probe], **QUIET)
    losses = model.history["validation_loss"]["validation_loss"].to_numpy()
    assert len(losses) < 12
    best = int(np.argmin(losses))
    assert best < len(losses) - 1
    assert same_weights(model.module.state_dict(), probe.weights[best])


def test_without_early_stopping_the_last_weights_stay(scripted_validation_loss):
    scripted_validation_loss += [3.0, 1.0, 2.0, 4.0]
    probe = WeightsProbe()
    model = model_on()
    model.train(max_epochs=4, early_stopping=False, callbacks=[probe], **QUIET)
    assert len(model.history["train_loss"]) == 4
    assert same_weights(model.module.state_dict(), probe.weights[-1])
    assert not any(isinstance(c, RestoreBestWeights) for c in model.trainer.callbacks)


def test_a_resumed_run_restores_the_best_weights_of_before_the_resume(
    scripted_validation_loss, tmp_path
):
    scripted_validation_loss += [3.0, 1.0, 2.0, 4.0]
    first = model_on()
    first.train(max_epochs=4, checkpoint_dir=tmp_path, **QUIET)
    # the checkpoint of the last epoch holds its weights and, in the callback's state, the
    # best ones (epoch 1): resuming it runs no epoch and ends on those
    resumed = model_on()
    resumed.train(max_epochs=4, checkpoint_dir=tmp_path, resume=True, **QUIET)
    assert same_weights(resumed.module.state_dict(), first.module.state_dict())
    last = torch.load(sorted(tmp_path.glob("*.ckpt"))[-1], weights_only=False)["state_dict"]
    assert not same_weights(
        {k.removeprefix("module."): v for k, v in last.items()}, first.module.state_dict()
    )


@pytest.mark.parametrize(
    ("n_obs", "kwargs", "on"),
    [
        pytest.param(120, {}, True, id="default-with-validation"),
        pytest.param(9, {}, False, id="default-without-validation"),
        pytest.param(120, {"train_size": 1.0}, False, id="default-train-size-1"),
        pytest.param(120, {"early_stopping": False}, False, id="false"),
        pytest.param(120, {"early_stopping": True}, True, id="true"),
    ],
)
def test_early_stopping_is_on_by_default_where_there_are_validation_samples(n_obs, kwargs, on):
    model = model_on(n_obs)
    model.train(max_epochs=1, **QUIET, **kwargs)
    callbacks = model.trainer.callbacks
    assert any(isinstance(c, RestoreBestWeights) for c in callbacks) is on
    stoppers = [c for c in callbacks if isinstance(c, EarlyStopping)]
    assert [c.patience for c in stoppers] == ([5] if on else [])


def test_early_stopping_patience_reaches_the_stopping_callback():
    model = model_on()
    model.train(max_epochs=1, early_stopping_patience=12, **QUIET)
    (stopper,) = [c for c in model.trainer.callbacks if isinstance(c, EarlyStopping)]
    assert stopper.patience == 12
    assert stopper.monitor == "validation_loss"


def test_early_stopping_is_off_by_default_with_several_processes():
    assert _early_stopping(None, 120, None, None, distributed=True) == (False, None)
    assert _early_stopping(None, 120, None, None, distributed=False) == (True, None)
    assert _early_stopping(None, 9, None, None, distributed=False) == (False, 1.0)
