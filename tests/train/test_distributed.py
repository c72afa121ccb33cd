"""Distributed training: two CPU processes (Lightning's ``ddp`` strategy over gloo).

Training, resuming a checkpoint on every rank, and a failure on one rank reported by rank 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_MODEL, assert_fp32_path_close, make_counts_adata

from gexbert_sc import GexBERT
from gexbert_sc.train import checkpoint_files
from gexbert_sc.train._plan import RNG_STATES_KEY

TESTS_DIR = Path(__file__).resolve().parents[1]

# Lightning's "ddp" launches the other rank by re-running this script, so training must run
# in a script of its own (not in pytest's process). Every rank saves its weights; rank 0
# (the only one with a history) its training losses, the model and its embedding. argv: the
# output directory.
DDP_SCRIPT = """
import sys
from pathlib import Path
import numpy as np
import torch
from helpers import TINY_MODEL, make_counts_adata
from gexbert_sc import GexBERT

out = Path(sys.argv[1])
adata = make_counts_adata(n_obs=256, seed=2)
GexBERT.setup_anndata(adata)
model = GexBERT(adata, **TINY_MODEL, seed=0)
model.train(
    max_epochs=2, batch_size=32, precision="32-true", accelerator="cpu", devices=2,
    strategy="ddp", enable_progress_bar=False,
)
rank = model.trainer.global_rank
torch.save(model.module.state_dict(), out / f"rank{rank}.pt")
if rank == 0:
    np.save(out / "loss.npy", model.history["train_loss"].to_numpy(float).ravel())
    model.save(out / "model")
    np.save(out / "embedding.npy", model.get_latent_representation())
"""


@pytest.mark.slow
def test_two_processes_train_identical_weights(tmp_path: Path) -> None:
    """Two ranks end with the same weights, the loss falls, rank 0's model loads alike."""
    script = tmp_path / "train.py"
    script.write_text(DDP_SCRIPT)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join((str(TESTS_DIR), str(TESTS_DIR.parent))),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    weights = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    for name, value in weights[0].items():
        assert torch.equal(weights[1][name], value), name
    loss = np.load(tmp_path / "loss.npy")
    assert len(loss) == 2 and loss[1] < loss[0]

    adata = make_counts_adata(n_obs=256, seed=2)
    loaded = GexBERT.load(str(tmp_path / "model"), adata=adata)
    # computed in rank 0's process (one thread) and here (the suite's threads)
    assert_fp32_path_close(loaded.get_latent_representation(), np.load(tmp_path / "embedding.npy"))


@pytest.fixture
def run_ddp(tmp_path: Path) -> Iterator[Callable[..., subprocess.CompletedProcess]]:
    """Run a script in a session of its own; whatever it started is killed at the end."""
    started: list[subprocess.Popen] = []

    def run(script: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        path = tmp_path / "script.py"
        path.write_text(script)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join((str(TESTS_DIR), str(TESTS_DIR.parent))),
            "OMP_NUM_THREADS": "1",
        }
        process = subprocess.Popen(
            [sys.executable, str(path), *args],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        started.append(process)
        _, stderr = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(process.args, process.returncode, None, stderr)

    yield run
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# Trains for 3 epochs on 2 processes, with dropout; argv: out prefix, checkpoint_dir ("" for
# none), "stop" (stop after the first epoch) or "resume" (resume=True) or "full". Before every
# step each rank draws rank + 1 numbers from the plan's generator and torch's global RNG, so
# that the ranks' random states differ, as data-dependent draws or one CUDA generator per
# device make them. Every rank saves its weights.
RESUME_SCRIPT = """
import sys
import lightning.pytorch as pl
import torch
from helpers import TINY_MODEL, make_counts_adata
from gexbert_sc import GexBERT


class RankDraws(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        generator = pl_module.generator("train", pl_module.device)
        torch.rand(trainer.global_rank + 1, generator=generator)
        torch.rand(trainer.global_rank + 1)


class StopAfterFirstEpoch(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


out, checkpoint_dir, mode = sys.argv[1], sys.argv[2] or None, sys.argv[3]
adata = make_counts_adata(n_obs=128, seed=2)
GexBERT.setup_anndata(adata)
model = GexBERT(adata, **TINY_MODEL, dropout=0.1, seed=0)
callbacks = [RankDraws()] + ([StopAfterFirstEpoch()] if mode == "stop" else [])
kwargs = {"checkpoint_dir": checkpoint_dir, "resume": mode == "resume"} if checkpoint_dir else {}
model.train(
    max_epochs=3, batch_size=32, precision="32-true", accelerator="cpu", devices=2,
    strategy="ddp", enable_progress_bar=False, callbacks=callbacks, **kwargs,
)
rank = model.trainer.global_rank
torch.save(model.module.state_dict(), f"{out}-rank{rank}.pt")
"""


@pytest.mark.slow
def test_interrupted_two_process_run_resumes_bit_identical_on_every_rank(
    tmp_path: Path, run_ddp
) -> None:
    """Each rank resumes its own random states; another number of processes is refused."""
    checkpoint_dir = tmp_path / "checkpoints"
    for out, directory, mode in [
        ("full", "", "full"),
        ("stopped", str(checkpoint_dir), "stop"),
        ("resumed", str(checkpoint_dir), "resume"),
    ]:
        done = run_ddp(RESUME_SCRIPT, str(tmp_path / out), directory, mode)
        assert done.returncode == 0, done.stderr[-3000:]
        if mode == "stop":
            (written,) = checkpoint_files(checkpoint_dir)
            assert written.name.startswith("epoch=0-")
            states = torch.load(written, weights_only=False)[RNG_STATES_KEY]
            assert len(states) == 2
            assert not torch.equal(states[0]["cpu"], states[1]["cpu"])
            assert not torch.equal(states[0]["generator"], states[1]["generator"])
    expected = torch.load(tmp_path / "full-rank0.pt")
    for rank in (0, 1):
        got = torch.load(tmp_path / f"resumed-rank{rank}.pt")
        assert got.keys() == expected.keys()
        for name, weight in expected.items():
            assert torch.equal(got[name], weight), (rank, name)

    adata = make_counts_adata(n_obs=128, seed=2)
    GexBERT.setup_anndata(adata)
    model = GexBERT(adata, **TINY_MODEL, dropout=0.1, seed=0)
    message = r"written by a run on 2 processes, but this run has 1\b"
    with pytest.raises(ValueError, match=message):
        model.train(
            max_epochs=3, batch_size=32, precision="32-true", accelerator="cpu", devices=1,
            enable_progress_bar=False, checkpoint_dir=checkpoint_dir, resume=True,
        )  # fmt: skip


# Rank 1 raises Boom, a class rank 0 does not know by import, either during the second epoch
# ("fit") or after fitting, in the steps train() takes once Lightning is done ("after_fit").
# argv: output directory, where. Every rank writes what train() raised (type, message, rank
# of the failed process, when) to rank<r>.json; rank 1 writes when it failed to failed_at.
CRASH_SCRIPT = """
import json
import os
import sys
import time
from pathlib import Path
import lightning.pytorch as pl
import torch.distributed as dist
from helpers import TINY_MODEL, make_counts_adata
from gexbert_sc import GexBERT

out, where = Path(sys.argv[1]), sys.argv[2]


class Boom(Exception):
    pass


def fail_on_rank_1():
    if dist.get_rank() == 1:
        (out / "failed_at").write_text(str(time.time()))
        raise Boom(f"rank 1 failed on purpose ({where})")


class FailInFit(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1:
            fail_on_rank_1()


class FailAfterFit(GexBERT):
    def to_device(self, device):
        fail_on_rank_1()
        super().to_device(device)


adata = make_counts_adata(n_obs=128, seed=2)
model_class = FailAfterFit if where == "after_fit" else GexBERT
model_class.setup_anndata(adata)
model = model_class(adata, **TINY_MODEL, seed=0)
record = {"type": None}
try:
    model.train(
        max_epochs=2, batch_size=32, precision="32-true", accelerator="cpu", devices=2,
        strategy="ddp", enable_progress_bar=False,
        callbacks=[FailInFit()] if where == "fit" else [],
    )
except Exception as error:
    record = {
        "type": type(error).__name__, "message": str(error),
        "rank": getattr(error, "rank", None), "at": time.time(),
    }
rank = int(os.environ.get("LOCAL_RANK", "0"))
(out / f"rank{rank}.json").write_text(json.dumps(record))
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["fit", "after_fit"])
def test_a_failed_rank_makes_rank_0_raise_its_error(tmp_path: Path, run_ddp, where: str) -> None:
    """Rank 0's train() raises rank 1's error (type, message, rank) within seconds."""
    # a few seconds after rank 1 exits with an error, Lightning's launcher kills rank 0
    # (returncode -9): what counts is what rank 0's train() raised before
    done = run_ddp(CRASH_SCRIPT, str(tmp_path), where, timeout=120)
    assert (tmp_path / "rank0.json").exists(), done.stderr[-3000:]
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    assert rank0["type"] == "DistributedTrainingError", (rank0, done.stderr[-3000:])
    assert rank0["rank"] == 1
    assert f"Process 1 of 2 failed: Boom: rank 1 failed on purpose ({where})" in rank0["message"]
    assert rank0["at"] - float((tmp_path / "failed_at").read_text()) < 20
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank1["type"] == "Boom"
    assert rank1["message"] == f"rank 1 failed on purpose ({where})"
