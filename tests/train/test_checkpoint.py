"""Checkpoints: a run killed mid-training resumes to the same weights; non-finite steps stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from helpers import TINY_MODEL, make_counts_adata

from gexbert_sc import GexBERT, GexBERTClassifier
from gexbert_sc.train._checkpoint import CHECKPOINT_NAME, checkpoint_files
from gexbert_sc.train._plan import RNG_STATES_KEY

TESTS_DIR = Path(__file__).resolve().parents[1]
EPOCHS = 6
#: 120 samples in minibatches of 32: 4 optimiser steps an epoch
STEPS_PER_EPOCH = 4

# Trains a tiny model for EPOCHS epochs with a fixed seed on one thread, in fp32, then saves
# its weights and the state of its optimiser and schedule. argv: out file, checkpoint_dir
# ("" for none), resume ("1" or "0").
TRAIN_SCRIPT = f"""
import sys
import torch
from helpers import TINY_MODEL, make_counts_adata
from gexbert_sc import GexBERT, GexBERTClassifier

torch.set_num_threads(1)
out, checkpoint_dir, resume = sys.argv[1], sys.argv[2] or None, sys.argv[3] == "1"
adata = make_counts_adata(seed=3)
GexBERT.setup_anndata(adata)
model = GexBERT(adata, **TINY_MODEL, seed=5)
kwargs = {{"checkpoint_dir": checkpoint_dir, "resume": resume}} if checkpoint_dir else {{}}
model.train(
    max_epochs={EPOCHS}, batch_size=32, precision="32-true", accelerator="cpu",
    enable_progress_bar=False, **kwargs,
)
optimizer = model.trainer.optimizers[0]
torch.save(
    {{
        "weights": model.module.state_dict(),
        "global_step": model.trainer.global_step,
        "adam_steps": sorted({{float(s["step"]) for s in optimizer.state.values()}}),
        "lr": [group["lr"] for group in optimizer.param_groups],
        "epochs_trained": len(model.history["train_loss"]),
    }},
    out,
)
"""


def _start(script: Path, out: Path, checkpoint_dir: Path | None, resume: bool) -> subprocess.Popen:
    """Run ``script`` in a fresh interpreter; its stderr goes to ``out`` with suffix ``.log``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join((str(TESTS_DIR), str(TESTS_DIR.parent))),
        "OMP_NUM_THREADS": "1",
    }
    args = [str(out), str(checkpoint_dir or ""), "1" if resume else "0"]
    with out.with_suffix(".log").open("w") as log:
        return subprocess.Popen(
            [sys.executable, str(script), *args], env=env, stdout=subprocess.DEVNULL, stderr=log
        )


def _log(process: subprocess.Popen) -> str:
    return Path(process.args[2]).with_suffix(".log").read_text()[-3000:]


def _finish(process: subprocess.Popen) -> dict:
    """Wait for a run of the training script; return what it saved."""
    process.wait(timeout=300)
    assert process.returncode == 0, _log(process)
    return torch.load(process.args[2], weights_only=False)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    """Started processes, killed at the end of the test if still running."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def test_run_killed_mid_training_resumes_to_the_uninterrupted_weights(tmp_path, processes):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    checkpoint_dir = tmp_path / "checkpoints"
    reference = _start(script, tmp_path / "reference.pt", None, resume=False)
    killed = _start(script, tmp_path / "killed.pt", checkpoint_dir, resume=False)
    processes += [reference, killed]
    deadline = time.monotonic() + 240
    while not checkpoint_files(checkpoint_dir):
        assert killed.poll() is None, _log(killed)
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    # two, if killed between writing a checkpoint and removing the previous one
    at_kill = checkpoint_files(checkpoint_dir)[-1]
    epoch = int(CHECKPOINT_NAME.fullmatch(at_kill.name)["epoch"])
    assert epoch < EPOCHS - 1  # killed mid-run
    state = torch.load(at_kill, weights_only=False)
    assert state["global_step"] == (epoch + 1) * STEPS_PER_EPOCH
    assert state["lr_schedulers"][0]["last_epoch"] == state["global_step"]
    (states,) = state[RNG_STATES_KEY]  # one process
    assert states["generator"] is not None and states["cuda"] == []

    resumed = _start(script, tmp_path / "resumed.pt", checkpoint_dir, resume=True)
    processes.append(resumed)
    got = _finish(resumed)
    expected = _finish(reference)
    assert expected["weights"].keys() == got["weights"].keys()
    for name, weight in expected["weights"].items():
        assert torch.equal(weight, got["weights"][name]), name
    # the optimiser's step count and the schedule continued from the checkpoint
    assert got["global_step"] == expected["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert got["adam_steps"] == expected["adam_steps"] == [EPOCHS * STEPS_PER_EPOCH]
    assert got["lr"] == expected["lr"]
    assert got["epochs_trained"] == EPOCHS - epoch - 1
    assert expected["epochs_trained"] == EPOCHS
    # Lightning keeps the checkpoint a run resumed from, next to the newest
    final = checkpoint_files(checkpoint_dir)
    assert final[-1].name == f"epoch={EPOCHS - 1}-step={EPOCHS * STEPS_PER_EPOCH}.ckpt"
    assert at_kill in final


@pytest.fixture
def model() -> GexBERT:
    adata = make_counts_adata(seed=3)
    GexBERT.setup_anndata(adata)
    return GexBERT(adata, **TINY_MODEL, seed=5)


def _train(model: GexBERT, **kwargs) -> None:
    model.train(
        **{
            "max_epochs": 3,
            "batch_size": 32,
            "precision": "32-true",
            "accelerator": "cpu",
            "enable_progress_bar": False,
            **kwargs,
        }
    )


def test_checkpoints_every_n_epochs_are_renamed_into_place(model, tmp_path, monkeypatch):
    replaced = []

    def spy(source: str, target: str) -> None:
        replaced.append((Path(source).name, Path(target).name))
        os_replace(source, target)

    os_replace = os.replace
    monkeypatch.setattr(os, "replace", spy)
    _train(model, checkpoint_dir=tmp_path, every_n_epochs=2)
    # 0-based epoch 1 is the second; epoch 2 (the third) is not a multiple of 2
    name = f"epoch=1-step={2 * STEPS_PER_EPOCH}.ckpt"
    assert replaced == [(f".{name}.partial", name)]
    assert sorted(path.name for path in tmp_path.iterdir()) == [name]
    state = torch.load(tmp_path / name, weights_only=False)
    assert state["optimizer_states"] and state["lr_schedulers"]
    assert state[RNG_STATES_KEY][0]["cpu"].dtype == torch.uint8
    other_seed = GexBERT(model.adata, **TINY_MODEL, seed=6)
    with pytest.raises(ValueError, match=r"with seed 5, but this run's seed is 6"):
        _train(other_seed, checkpoint_dir=tmp_path, resume=True)


def test_checkpoint_arguments_are_refused_at_the_door(model, tmp_path):
    missing = tmp_path / "missing"
    empty = re.escape(str(tmp_path))
    with pytest.raises(ValueError, match=r"`every_n_epochs` must be a positive integer, got 0"):
        _train(model, checkpoint_dir=tmp_path, every_n_epochs=0)
    with pytest.raises(ValueError, match=r"`every_n_epochs=2` needs a `checkpoint_dir`"):
        _train(model, every_n_epochs=2)
    with pytest.raises(ValueError, match=r"`resume=True` needs a `checkpoint_dir`"):
        _train(model, resume=True)
    with pytest.raises(TypeError, match=r"`checkpoint_dir` must be a path .*got int 3"):
        _train(model, checkpoint_dir=3)
    with pytest.raises(TypeError, match=r"`resume` must be True or False, got 'yes'"):
        _train(model, checkpoint_dir=tmp_path, resume="yes")
    with pytest.raises(FileNotFoundError, match=rf"'{re.escape(str(missing))}' does not exist"):
        _train(model, checkpoint_dir=missing, resume=True)
    with pytest.raises(FileNotFoundError, match=rf"'{empty}' holds no checkpoint"):
        _train(model, checkpoint_dir=tmp_path, resume=True)
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(NotADirectoryError, match=r"must be a directory, got the file"):
        _train(model, checkpoint_dir=tmp_path / "notes.txt")
    (tmp_path / "epoch=0-step=4.ckpt").write_bytes(b"")
    with pytest.raises(FileExistsError, match=r"already holds checkpoints \(epoch=0-step=4"):
        _train(model, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"either `resume=True` .* or `ckpt_path`, got both"):
        _train(model, checkpoint_dir=tmp_path, resume=True, ckpt_path="other.ckpt")
    assert not model.is_trained_


class _Interrupted(Exception):
    """Raised by :class:`_StopAtEpoch`."""


class _StopAtEpoch(pl.Callback):
    """Interrupts training when epoch ``epoch`` (0-based) starts."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise _Interrupted


def test_interrupted_classifier_with_head_dropout_resumes_bit_identical(tmp_path):
    # the head's dropout (p=0.1) draws from torch's global RNG, restored from the checkpoint
    adata = make_counts_adata(seed=3)
    GexBERT.setup_anndata(adata, labels_key="cell_type")
    pretrained = GexBERT(adata, **TINY_MODEL, seed=5)
    _train(pretrained, max_epochs=1)
    uninterrupted = GexBERTClassifier.from_gexbert_model(pretrained)
    _train(uninterrupted, max_epochs=4)
    interrupted = GexBERTClassifier.from_gexbert_model(pretrained)
    with pytest.raises(_Interrupted):
        _train(interrupted, max_epochs=4, checkpoint_dir=tmp_path, callbacks=[_StopAtEpoch(2)])
    assert [path.name for path in checkpoint_files(tmp_path)] == ["epoch=1-step=8.ckpt"]
    resumed = GexBERTClassifier.from_gexbert_model(pretrained)
    _train(resumed, max_epochs=4, checkpoint_dir=tmp_path, resume=True)
    expected = uninterrupted.module.state_dict()
    for name, weight in resumed.module.state_dict().items():
        assert torch.equal(weight, expected[name]), name


class _Snapshots(pl.Callback):
    """Copies the weights after every optimiser step."""

    def __init__(self):
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.weights.append({k: v.clone() for k, v in pl_module.module.state_dict().items()})


@pytest.mark.parametrize(
    ("lr", "found"),
    [
        # the weights grow so large that the loss itself is NaN at the second step
        (1e8, "the training loss is nan"),
        # here the loss is still finite but its gradients are not
        (1e4, r"a gradient is NaN or infinite \(the loss is finite\)"),
    ],
)
def test_diverging_training_stops_and_keeps_the_last_finite_weights(model, lr, found):
    snapshots = _Snapshots()
    message = (
        rf"Training stopped at epoch 0, optimiser step 1: {found}\. The step's update was not "
        rf"applied.*peak `lr`={lr}.*lower `lr`"
    )
    with pytest.raises(RuntimeError, match=message):
        _train(model, lr=lr, callbacks=[snapshots])
    assert len(snapshots.weights) == 1
    for name, weight in model.module.state_dict().items():
        assert torch.isfinite(weight).all(), name
        assert torch.equal(weight, snapshots.weights[-1][name]), name
