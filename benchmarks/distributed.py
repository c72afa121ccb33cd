"""Distributed training on CPU: 1 against 2 processes (Lightning's ``ddp`` over gloo).

Trains the same small GexBERT (``SMALL_MODEL``, fp32) on the first ``--n-obs`` samples of
``pbmc68k()`` with ``devices=1`` and with ``devices=2, strategy="ddp"``, the machine's cores
shared out among the processes (``torch.set_num_threads(cores // devices)``). Each run is a
process of its own (``--devices N`` runs one; Lightning's ``ddp`` re-runs this script for the
other rank). ``batch_size`` is per process, so 2 processes step with twice the samples per
optimiser step and take half the steps. Reported: training samples/s between Lightning's
``on_train_start`` and ``on_train_end`` (process start-up and the process group excluded),
the wall time of ``train()`` and the final epoch's training loss.

Rerun (about 10 minutes on 2 cores)::

    python benchmarks/distributed.py          # results/distributed.csv
    python benchmarks/distributed.py --fast   # 1,000 samples, 1 epoch
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import lightning.pytorch as pl
import pandas as pd
import torch
from _common import SMALL_MODEL, benchmark_parser, quiet_training_logs, results_path

import gexbert_sc
from gexbert_sc.datasets import pbmc68k


class TrainClock(pl.Callback):
    """Wall seconds between the start and the end of Lightning's training loop."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.start


def train_once(devices: int, n_obs: int, epochs: int, batch_size: int) -> dict | None:
    """Train on ``devices`` CPU processes; rank 0 returns its row (other ranks ``None``)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // devices))
    adata = pbmc68k()[:n_obs].copy()
    gexbert_sc.GexBERT.setup_anndata(adata)
    model = gexbert_sc.GexBERT(adata, **SMALL_MODEL, seed=0)
    clock = TrainClock()
    strategy = {"strategy": "ddp"} if devices > 1 else {}
    start = time.perf_counter()
    model.train(
        max_epochs=epochs,
        batch_size=batch_size,
        precision="32-true",
        accelerator="cpu",
        devices=devices,
        train_size=1.0,
        enable_progress_bar=False,
        callbacks=[clock],
        **strategy,
    )
    if model.trainer.global_rank != 0:
        return None
    return {
        "processes": devices,
        "threads_per_process": torch.get_num_threads(),
        "n_obs": n_obs,
        "epochs": epochs,
        "batch_size_per_process": batch_size,
        "train_seconds": time.perf_counter() - start,
        "samples_per_s": n_obs * epochs / clock.seconds,
        "final_train_loss": float(model.history["train_loss"].iloc[-1, 0]),
    }


def main() -> None:
    parser = benchmark_parser(__doc__, "1,000 samples, 1 epoch (smoke run)")
    parser.add_argument("--n-obs", type=int, default=8000, help="samples trained on")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="per process")
    parser.add_argument("--devices", type=int, help="run one configuration (internal)")
    args = parser.parse_args()
    n_obs, epochs = (1000, 1) if args.fast else (args.n_obs, args.epochs)
    quiet_training_logs()
    if args.devices is not None:
        row = train_once(args.devices, n_obs, epochs, args.batch_size)
        if row is not None:
            print("ROW " + json.dumps(row), flush=True)
        return
    rows = []
    for devices in (1, 2):
        done = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--devices", str(devices)],
            capture_output=True,
            text=True,
            check=True,
        )
        line = next(line for line in done.stdout.splitlines() if line.startswith("ROW "))
        rows.append(json.loads(line[4:]))
    table = pd.DataFrame(rows)
    table.to_csv(results_path("distributed.csv", args), index=False)
    print(table.round(3).to_markdown(index=False))


if __name__ == "__main__":
    main()
