"""Distributed training: two CPU processes (Lightning's ``ddp`` strategy over gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_counts_adata

from gexbert_sc import GexBERT

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
    env = {**os.environ, "PYTHONPATH": str(TESTS_DIR), "OMP_NUM_THREADS": "1"}
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
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), np.load(tmp_path / "embedding.npy")
    )
