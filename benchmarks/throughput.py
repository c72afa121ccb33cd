"""Throughput benchmark: speed and memory of GexBERT against this machine's own limits.

One run, one machine, everything side by side:

1. **Peak**: this machine's matmul rate in fp32 and bf16 (best of square products of growing
   size). Where bf16 is emulated (a CPU without AVX512-BF16 / AMX) its peak is far *below*
   fp32, ``precision="auto"`` trains in fp32, and the bf16 model runs are skipped unless asked
   for (``--precisions 32-true bf16-mixed``).
2. **Grid** (``--n-context`` × ``--d-model``, default 256/512/1,024 × 64/128/256; 2 encoder
   layers, 1 decoder layer, 4 heads, synthetic 2,000-gene counts): training tokens/s and
   samples/s (Lightning steps, optimizer included), embedding samples/s, all-gene restoration
   samples/s, the FLOP rate of each, **model FLOP utilisation** (MFU = achieved / peak of the
   precision used) and peak resident memory. FLOPs are counted from the architecture (formula in
   ``docs/performance.md``); ``flops_check`` is torch's FLOP counter over the same calls divided
   by the formula (it should be close to 1). The inference context is set to ``n_context`` so
   that every sample has exactly ``n_context`` context tokens. Inference batch sizes come from
   ``--memory-budget`` (as ``get_latent_representation(memory_budget=...)`` picks them);
   training batches hold about ``--train-tokens`` tokens. Models are set up and trained on the
   first 1,000 samples (construction fits statistics whose cost grows with that number) and
   read all samples at inference.
3. **Scaling in samples**: embedding wall time and peak memory for 1k → 100k samples of
   synthetic sparse 20,000-gene counts (100 non-zero genes per sample, generated on the fly) with
   a small model (d_model 32, 2 heads, n_context 64) so that 100k samples fit in the time
   budget; the time must grow linearly (log-log slope near 1) and the memory must not follow the
   dense size of the matrix (8 GB at 100k samples). Scaling models are set up on the first
   1,000 samples and embed all of them with ``memory_budget="256MB"``.
4. **Scaling in genes**: time per sample for 1k → 30k genes at fixed n_context (200 non-zero
   genes per sample), with the default model size (d_model 128, n_context 256), so that
   "flat" is judged against the transformer's real per-sample cost; the fitted per-gene cost
   (densified minibatch rows, context selection) is reported in ns per gene per sample.
5. **zeisel** (3,005 cells × 4,000 genes): set-up (model construction: GexBERT fits its
   statistics there), one training epoch and latent extraction of scVI
   (scvi-tools defaults) and GexBERT (d_model 64, n_context 128, as in
   ``core_embedding_restoration.py``), and ``sc.pp.pca`` (50 components, log-normalised input).
   ``per_peak_gflops`` is the hardware-normalised rate: samples per second per GFLOP/s of the
   fp32 matmul peak measured in the same run.

6. **Default settings, this version against 0.2** (``_speedup.py``): per CPU kind (the
   machine as it is, and the same machine limited to AVX2 through torch's, oneDNN's and MKL's
   instruction-set switches, with bf16 declared absent), training samples/s at the package
   defaults (zeisel_shallow's 2,404 training samples × 500 genes, batch 64, the precision
   ``"auto"`` picks and fp32), the embedding of 1,024 zeisel cells and the restoration of all
   4,000 genes of 128 (fp32, the inference default, and bf16, opt-in), with MFU against the
   matmul peak each process measures; 0.2 (commit ``80e7c90``, extracted from git) runs in the
   same run on the same data, each measurement in a fresh process (``--repeats`` times,
   medians reported). ``levers``: training with one of this version's throughput levers
   switched off at a time, and with the blocks compiled by ``torch.compile``; ``profile``:
   seconds per training step by kind of operation (torch profiler), 0.2 beside this version.
   Writes ``throughput_defaults.{csv,md,png}``. Rerun:
   ``python benchmarks/throughput.py --sections defaults levers profile`` (≈ 30 minutes on 2
   idle cores; ``--cpu-kinds native``, ``--baseline-ref none`` to skip parts).

Memory: each configuration runs in its own process (``multiprocessing`` spawn). Peak resident
memory of each phase is read from ``VmHWM`` in ``/proc/self/status`` after resetting it through
``/proc/self/clear_refs`` at the start of the phase (Linux; elsewhere the process's
``ru_maxrss``); ``peak_rss_mb`` is that peak, ``phase_mb`` its increase over the resident memory
at the start of the phase (memory freed by an earlier phase and reused is not counted there) and
``base_rss_mb`` the process's resident memory once the libraries are imported. Inference phases
run before the timed training, on a model trained for a single step of 2 samples (speed does not
depend on the weights). On a GPU, ``peak_gpu_mb`` is ``torch.cuda.max_memory_allocated`` of the
phase.

Timings are only as good as the machine is quiet: the load average is printed first; other
processes on the cores (even one) can halve the rates. ``--threads`` pins torch/BLAS threads.

Rerun: ``python benchmarks/throughput.py`` (15–20 minutes on 2 idle CPU cores), ``--fast`` for a
smoke run (a few minutes; writes ``*_fast`` files, not committed). Writes
``benchmarks/results/throughput.csv`` and ``benchmarks/results/throughput_scaling.png`` and prints
the tables and a pass/fail line per target.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import _speedup
import numpy as np
import pandas as pd
import torch
from _common import (
    SMALL_MODEL,
    PeakMemory,
    StepTimer,
    benchmark_parser,
    log_normalise,
    resident_mb,
    results_path,
    silence_libraries,
    synchronise,
    timed,
    training_flops,
)
from lightning.pytorch.callbacks import Callback

GRID_GENES = 2000
GRID_NONZERO = 300
FIT_SAMPLES = 1000
SCALING_BUDGET = "256MB"
QUERY_CHUNK = 1024
DTYPES = {"32-true": torch.float32, "bf16-mixed": torch.bfloat16}


# ----------------------------------------------------------------------------- peak
def matmul_peak(dtype: torch.dtype, device: torch.device, seconds: float) -> tuple[float, int]:
    """Best GFLOP/s of ``n × n`` matmuls for growing ``n``, and that ``n``.

    A size is skipped once a single product would take longer than ``seconds``.
    """
    best, best_n, rate = 0.0, 0, None
    for n in (512, 1024, 2048, 4096, 8192):
        flops = 2 * n**3
        if rate is not None and flops / rate > seconds:
            break
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        a @ b
        synchronise(device)
        reps, start = 0, time.perf_counter()
        while True:
            a @ b
            reps += 1
            synchronise(device)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / 2:
                break
        rate = reps * flops / elapsed
        if rate > best:
            best, best_n = rate, n
    return best / 1e9, best_n


# ----------------------------------------------------------------------------- FLOPs
def model_flops(cfg: dict, n_vars: int) -> dict[str, float]:
    """Per-sample FLOPs of a training step, an embedding and an all-gene restoration."""
    from gexbert_sc.module import decoder_flops, encoder_flops

    d, layers, dec = cfg["d_model"], cfg["n_layers"], cfg["n_decoder_layers"]
    inference_tokens = 1 + min(cfg["n_inference_context"], n_vars)
    embed = encoder_flops(inference_tokens, d, layers)
    n_chunks = math.ceil(n_vars / cfg["query_chunk_size"])
    restore = embed + decoder_flops(n_vars, inference_tokens, d, dec, n_chunks)
    train = training_flops(cfg["n_context"], n_vars, d, layers, dec)
    return {"train": train, "embed": embed, "restore": restore}


def counted_flops(model, adata, n: int, precision: str) -> dict[str, float]:
    """Per-sample FLOPs of the same calls counted by torch (attention on the math path)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    rows = np.arange(n)
    counts = {}
    with sdpa_kernel(SDPBackend.MATH):
        tensors = next(iter(model.minibatches(adata, indices=rows, batch_size=n)))
        model.module.train()  # training mode hides genes, as a training step does
        with FlopCounterMode(display=False) as counter:
            _, _, losses = model.module(tensors)
            losses.loss.backward()
        model.module.zero_grad(set_to_none=True)
        counts["train"] = counter.get_total_flops() / n
        calls = {
            "embed": lambda: model.get_latent_representation(
                indices=rows, batch_size=n, precision=precision
            ),
            "restore": lambda: model.get_imputed_expression(
                indices=rows,
                batch_size=n,
                keep_observed=False,
                return_numpy=True,
                precision=precision,
            ),
        }
        for phase, call in calls.items():
            with FlopCounterMode(display=False) as counter:
                call()
            counts[phase] = counter.get_total_flops() / n
    return counts


# ----------------------------------------------------------------------------- data
def sparse_counts(n_obs: int, n_vars: int, nonzero: int, seed: int = 0, chunk: int = 10_000):
    """CSR float32 counts with about ``nonzero`` non-zero genes per sample, built in chunks."""
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    nnz = n_obs * nonzero
    indices = np.empty(nnz, dtype=np.int32)
    data = np.empty(nnz, dtype=np.float32)
    for start in range(0, n_obs, chunk):
        rows = min(chunk, n_obs - start)
        cols = rng.integers(0, n_vars, size=(rows, nonzero), dtype=np.int32)
        span = slice(start * nonzero, (start + rows) * nonzero)
        indices[span] = np.sort(cols, axis=1).ravel()
        data[span] = rng.geometric(0.3, size=rows * nonzero)
    indptr = np.arange(0, nnz + 1, nonzero, dtype=np.int64)
    x = sp.csr_matrix((data, indices, indptr), shape=(n_obs, n_vars))
    x.sum_duplicates()
    obs = pd.DataFrame(index=pd.RangeIndex(n_obs).astype(str))
    var = pd.DataFrame(index=pd.Index([f"gene_{j}" for j in range(n_vars)]))
    return ad.AnnData(x, obs=obs, var=var)


def _matrix_mb(adata) -> tuple[float, float]:
    """Stored (sparse) and dense float32 size of ``adata.X`` in MB."""
    x = adata.X
    stored = (x.data.nbytes + x.indices.nbytes + x.indptr.nbytes) / 2**20
    return stored, 4 * adata.n_obs * adata.n_vars / 2**20


# ----------------------------------------------------------------------------- timing
class EpochTimer(Callback):
    """Wall time of each training epoch."""

    def __init__(self):
        self.epochs = []

    def on_train_epoch_start(self, trainer, *args) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, *args) -> None:
        synchronise(trainer.lightning_module.device)
        self.epochs.append(time.perf_counter() - self._start)


def time_inference(call, n_obs: int, batch_size: int, seconds: float) -> dict:
    """Warm up on one batch, then time ``call(rows)`` on as many rows as fill ``seconds``."""
    _, warm = timed(call, np.arange(min(batch_size, n_obs)))
    n = int(np.clip(seconds / warm * batch_size, min(batch_size, n_obs), n_obs))
    with PeakMemory() as memory:
        _, elapsed = timed(call, np.arange(n))
    return {"n_obs": n, "seconds": elapsed, "samples_per_s": n / elapsed, **memory.row()}


def _setup_child(params: dict) -> float:
    """Threads, quiet logs and imports of a child; returns its resident memory (MB) then."""
    if params["threads"]:
        torch.set_num_threads(params["threads"])
    torch.manual_seed(0)
    import scanpy  # noqa: F401
    import scvi  # noqa: F401

    import gexbert_sc  # noqa: F401

    silence_libraries()
    return resident_mb()


def _accelerator(device: str) -> str:
    return "gpu" if device == "cuda" else "cpu"


def _new_model(adata, cfg: dict, device: str):
    """A model of ``cfg`` set up on ``adata`` and trained one step, and its set-up seconds.

    Inference speed does not depend on the weights: one small step makes the model usable.
    """
    import gexbert_sc

    gexbert_sc.GexBERT.setup_anndata(adata)
    keys = ("d_model", "n_layers", "n_decoder_layers", "n_heads", "n_context")
    model, seconds = timed(
        gexbert_sc.GexBERT,
        adata,
        n_inference_context=cfg["n_inference_context"],
        **{k: cfg[k] for k in keys},
    )
    model.train(
        max_epochs=1,
        max_steps=1,
        batch_size=2,
        train_size=1.0,
        accelerator=_accelerator(device),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model.to_device(device)
    return model, seconds


# ----------------------------------------------------------------------------- children
def run_config(params: dict) -> list[dict]:
    """Grid point: embedding, restoration, then training throughput of one configuration."""
    base_mb = _setup_child(params)
    cfg, precision, seconds = params["cfg"], params["precision"], params["seconds"]
    adata = sparse_counts(params["n_obs"], GRID_GENES, GRID_NONZERO)
    fit = adata[:FIT_SAMPLES].copy()  # set up and trained on; inference reads all samples
    model, _ = _new_model(fit, cfg, params["device"])
    n_vars = adata.n_vars
    flops = model_flops(cfg, n_vars)
    counted = counted_flops(model, fit, 2, precision) if params["check_flops"] else {}
    base = {**cfg, "precision": precision, "n_vars": n_vars, "base_rss_mb": base_mb}
    rows = []
    for phase in ("embed", "restore"):
        n_query = n_vars if phase == "restore" else 0
        batch = model.batch_size_for_memory(
            params["memory_budget"], n_query=n_query, query_chunk_size=cfg["query_chunk_size"]
        )
        if phase == "embed":

            def call(idx, batch=batch):
                return model.get_latent_representation(
                    adata, indices=idx, batch_size=batch, precision=precision
                )
        else:

            def call(idx, batch=batch):
                return model.get_imputed_expression(
                    adata,
                    indices=idx,
                    batch_size=batch,
                    keep_observed=False,
                    query_chunk_size=cfg["query_chunk_size"],
                    return_numpy=True,
                    precision=precision,
                )

        timed = time_inference(call, adata.n_obs, batch, seconds)
        rows.append({**base, "phase": phase, "batch_size": batch, **timed})
    batch = max(2, params["train_tokens"] // (1 + cfg["n_context"]))
    timer = StepTimer(seconds)
    with PeakMemory() as memory:
        model.train(
            max_epochs=1,
            batch_size=batch,
            train_size=1.0,
            precision=precision,
            accelerator=_accelerator(params["device"]),
            callbacks=[timer],
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    per_step = timer.seconds_per_step()
    rows.append(
        {
            **base,
            "phase": "train",
            "batch_size": batch,
            "n_obs": batch * (len(timer.ends) - 1),
            "seconds": per_step * (len(timer.ends) - 1),
            "samples_per_s": batch / per_step,
            "tokens_per_s": batch * (1 + cfg["n_context"]) / per_step,
            **memory.row(),
        }
    )
    for row in rows:
        row["gflop_per_sample"] = flops[row["phase"]] / 1e9
        row["gflop_per_s"] = row["gflop_per_sample"] * row["samples_per_s"]
        if row["phase"] in counted:
            row["flops_check"] = counted[row["phase"]] / flops[row["phase"]]
    return rows


def run_scaling(params: dict) -> list[dict]:
    """Scaling point: embed every sample of a synthetic sparse matrix.

    The model is set up on the first ``FIT_SAMPLES`` samples (as a model trained on some
    samples embeds many), so that only the embedding grows with the number of samples.
    """
    base_mb = _setup_child(params)
    cfg = params["cfg"]
    adata = sparse_counts(params["n_obs"], params["n_vars"], params["nonzero"])
    stored_mb, dense_mb = _matrix_mb(adata)
    fit = adata[: min(adata.n_obs, FIT_SAMPLES)].copy()
    model, setup_seconds = _new_model(fit, cfg, params["device"])
    batch = model.batch_size_for_memory(SCALING_BUDGET)
    model.get_latent_representation(fit, indices=np.arange(16), batch_size=batch)  # warm-up
    with PeakMemory() as memory:
        _, elapsed = timed(model.get_latent_representation, adata, batch_size=batch)
    return [
        {
            **cfg,
            "phase": "embed",
            "n_obs": adata.n_obs,
            "n_vars": adata.n_vars,
            "batch_size": batch,
            "seconds": elapsed,
            "samples_per_s": adata.n_obs / elapsed,
            "setup_seconds": setup_seconds,
            "stored_mb": stored_mb,
            "dense_mb": dense_mb,
            "base_rss_mb": base_mb,
            **memory.row(),
        }
    ]


def _zeisel_input(method: str, n_obs: int | None):
    import gexbert_sc

    adata = gexbert_sc.datasets.zeisel()
    if n_obs is not None and n_obs < adata.n_obs:
        adata = adata[np.random.default_rng(0).choice(adata.n_obs, n_obs, replace=False)].copy()
    if method == "PCA (scanpy)":
        log_normalise(adata)
    return adata


def run_zeisel(params: dict) -> list[dict]:
    """zeisel: one method's training epoch and latent extraction (or PCA)."""
    base_mb = _setup_child(params)
    import scanpy as sc
    import scvi

    import gexbert_sc

    method = params["method"]
    adata = _zeisel_input(method, params["n_obs"])
    base = {"method": method, "n_obs": adata.n_obs, "n_vars": adata.n_vars, "base_rss_mb": base_mb}
    if method == "PCA (scanpy)":
        with PeakMemory() as memory:
            _, elapsed = timed(sc.pp.pca, adata, n_comps=50)
        return [{**base, "phase": "pca", "seconds": elapsed, **memory.row()}]
    if method == "scVI":
        scvi.model.SCVI.setup_anndata(adata)
        model, setup_seconds = timed(scvi.model.SCVI, adata)
        train_kwargs = {}
    else:
        gexbert_sc.GexBERT.setup_anndata(adata)
        model, setup_seconds = timed(gexbert_sc.GexBERT, adata, **SMALL_MODEL)
        train_kwargs = {"precision": params["precision"]}
    timer = EpochTimer()
    with PeakMemory() as train_memory:
        model.train(
            max_epochs=1,
            train_size=1.0,
            accelerator=_accelerator(params["device"]),
            callbacks=[timer],
            enable_progress_bar=False,
            **train_kwargs,
        )
    with PeakMemory() as latent_memory:
        _, elapsed = timed(model.get_latent_representation)
    rows = [
        {**base, "phase": "setup", "seconds": setup_seconds},
        {**base, "phase": "train_epoch", "seconds": timer.epochs[0], **train_memory.row()},
        {**base, "phase": "latent", "seconds": elapsed, **latent_memory.row()},
    ]
    if method.startswith("GexBERT"):
        cfg = {**model.hparams, "query_chunk_size": QUERY_CHUNK}
        rows[1]["gflop_per_s"] = model_flops(cfg, adata.n_vars)["train"] * adata.n_obs
        rows[1]["gflop_per_s"] /= timer.epochs[0] * 1e9
    for row in rows[1:]:
        row["samples_per_s"] = adata.n_obs / row["seconds"]
    return rows


def isolated(function, params: dict) -> list[dict]:
    """Run ``function(params)`` in a fresh spawned process (clean peak memory)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, params).result()


# ----------------------------------------------------------------------------- report
def loglog_slope(x, y) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def targets(table: pd.DataFrame, peaks: dict, bf16_native: bool) -> list[str]:
    """Pass/fail lines for the issue's targets."""
    lines = []
    if not bf16_native:
        lines.append(
            f"bf16 is emulated on this machine (peak {peaks['bf16-mixed']:.1f} vs fp32 "
            f"{peaks['32-true']:.1f} GFLOP/s): MFU is against the peak of the precision used."
        )
    grid = table[table.section == "grid"]
    for phase, goal in (("train", 0.40), ("embed", 0.50)):
        rows = grid[grid.phase == phase]
        if rows.empty:
            continue
        best = rows.loc[rows.mfu.idxmax()]
        lines.append(
            f"{phase} MFU ≥ {goal:.0%}: best {best.mfu:.0%} (d_model {best.d_model:.0f}, "
            f"n_context {best.n_context:.0f}, {best.precision}), median {rows.mfu.median():.0%} "
            f"-> {'PASS' if best.mfu >= goal else 'FAIL'}"
        )
    samples = table[table.section == "samples"].sort_values("n_obs")
    if len(samples) >= 2:
        slope = loglog_slope(samples.n_obs, samples.seconds)
        lines.append(
            f"embedding time vs samples: log-log slope {slope:.2f} (linear: 0.85–1.15) "
            f"-> {'PASS' if 0.85 <= slope <= 1.15 else 'FAIL'}"
        )
        first, last = samples.iloc[0], samples.iloc[-1]
        used = (first.peak_rss_mb - first.base_rss_mb, last.peak_rss_mb - last.base_rss_mb)
        growth = (used[1] - used[0]) / (last.dense_mb - first.dense_mb)
        lines.append(
            f"memory vs dense size: from {first.n_obs:,.0f} to {last.n_obs:,.0f} samples, the "
            f"peak memory above the imports (data, model, embedding) went {used[0]:.0f} -> "
            f"{used[1]:.0f} MB while the dense matrix went {first.dense_mb:,.0f} -> "
            f"{last.dense_mb:,.0f} MB (growth {growth:.1%} of the dense growth; ≤ 10 %) "
            f"-> {'PASS' if growth <= 0.10 else 'FAIL'}"
        )
    genes = table[table.section == "genes"].sort_values("n_vars")
    if len(genes) >= 2:
        per_sample = genes.seconds / genes.n_obs
        ratio = per_sample.iloc[-1] / per_sample.iloc[0]
        slope = np.polyfit(genes.n_vars, per_sample, 1)[0]
        lines.append(
            f"embedding time vs genes: {genes.n_vars.iloc[-1]:,.0f} genes take {ratio:.2f}× the "
            f"time per sample of {genes.n_vars.iloc[0]:,.0f} ({slope * 1e9:.0f} ns per gene per "
            f"sample; flat: ≤ 1.25×) -> {'PASS' if ratio <= 1.25 else 'FAIL'}"
        )
    return lines


def plot_scaling(table: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    for col, (section, x, label) in enumerate(
        (("samples", "n_obs", "samples (20,000 genes)"), ("genes", "n_vars", "genes"))
    ):
        rows = table[table.section == section].sort_values(x)
        if rows.empty:
            continue
        ax = axes[0, col]
        y = rows.seconds / rows.n_obs * 1e3 if section == "genes" else rows.seconds
        ax.plot(rows[x], y, "o-", label="measured")
        if section == "samples":
            ax.plot(rows[x], rows[x] * y.iloc[-1] / rows[x].iloc[-1], "k--", label="linear")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_ylabel("embedding wall time (s)")
        else:
            ax.set_ylim(0, 1.2 * y.max())
            ax.set_ylabel("embedding time per sample (ms)")
        ax.set_xlabel(label)
        ax.legend()
        ax = axes[1, col]
        used = rows.peak_rss_mb - rows.base_rss_mb
        ax.plot(rows[x], used, "o-", label="peak above imports (data, model, embedding)")
        ax.plot(rows[x], rows.phase_mb, "s-", label="added while embedding")
        ax.plot(rows[x], rows.dense_mb, "k--", label="dense matrix (float32)")
        ax.plot(rows[x], rows.stored_mb, ":", label="stored sparse matrix")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("MB")
        ax.legend()
    fig.suptitle("GexBERT embedding: cost vs data size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


COLUMNS = {
    "grid": [
        "phase", "precision", "d_model", "n_context", "batch_size", "samples_per_s",
        "tokens_per_s", "gflop_per_s", "mfu", "flops_check", "peak_rss_mb", "phase_mb",
    ],
    "samples": [
        "n_obs", "n_vars", "d_model", "n_context", "batch_size", "seconds", "samples_per_s",
        "setup_seconds", "base_rss_mb", "peak_rss_mb", "phase_mb", "stored_mb", "dense_mb",
    ],
    "zeisel": ["method", "phase", "n_obs", "seconds", "samples_per_s", "per_peak_gflops",
               "gflop_per_s", "mfu", "peak_rss_mb", "phase_mb"],
}  # fmt: skip
COLUMNS["genes"] = COLUMNS["samples"]


def report_speedup(args: argparse.Namespace, sections: list[str], bf16_native: bool) -> None:
    """Run the default-settings sections (:mod:`_speedup`); write and print their results.

    With ``--from-csv``, summarise the rows of an earlier run instead of measuring.
    """
    if args.from_csv:
        table = pd.read_csv(args.from_csv, keep_default_na=False, na_values=[""])
    else:
        rows = _speedup.run(
            Path(__file__).resolve(),
            sections,
            args.cpu_kinds,
            args.baseline_ref,
            1 if args.fast else args.repeats,
            args.fast,
            2.0 if args.fast else (args.seconds or 15.0),
            bf16_native,
        )
        table = pd.DataFrame(rows)
        table.to_csv(results_path("throughput_defaults.csv", args), index=False)
    sections = [s for s in sections if s in set(table.section)]
    summary = _speedup.summarise(table) if "defaults" in sections else pd.DataFrame()
    levers = _speedup.lever_table(table)
    profile = _speedup.profile_table(table)
    text = _speedup.markdown(summary, levers, profile)
    results_path("throughput_defaults.md", args).write_text(text)
    print("\n== default settings\n" + text)
    if not summary.empty:
        for line in _speedup.goal_lines(summary):
            print(line)
        _speedup.plot(summary, results_path("throughput_defaults.png", args))


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], "small grid and sizes (smoke run)")
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["grid", "samples", "genes", "zeisel", "defaults", "levers", "profile"],
    )
    parser.add_argument("--n-context", nargs="+", type=int, default=None)
    parser.add_argument("--d-model", nargs="+", type=int, default=None)
    parser.add_argument("--precisions", nargs="+", default=None, choices=list(DTYPES))
    parser.add_argument("--memory-budget", default="1GB", help="inference memory budget")
    parser.add_argument("--train-tokens", type=int, default=None, help="tokens per train step")
    parser.add_argument("--threads", type=int, default=None, help="torch/BLAS threads")
    parser.add_argument("--seconds", type=float, default=None, help="time per measurement")
    parser.add_argument("--cpu-kinds", nargs="+", default=list(_speedup.CPU_KINDS))
    parser.add_argument("--baseline-ref", default=_speedup.BASELINE_REF, help="'none': skip")
    parser.add_argument("--repeats", type=int, default=2, help="defaults-section repeats")
    parser.add_argument("--from-csv", default=None, help="summarise this earlier run's rows")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        rows = _speedup.child(
            json.loads(args.child),
            lambda precision: matmul_peak(DTYPES[precision], torch.device("cpu"), 1.0)[0],
        )
        print("ROWS " + json.dumps(rows))
        return
    from gexbert_sc.train import cpu_supports_bf16, resolve_precision

    if args.threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(args.threads)
        torch.set_num_threads(args.threads)
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    bf16_native = torch.cuda.is_bf16_supported() if on_gpu else cpu_supports_bf16()
    fast = args.fast
    seconds = args.seconds or (1.0 if fast else 4.0)
    precisions = args.precisions or [resolve_precision("auto", on_gpu)]
    machine = {
        "device": torch.cuda.get_device_name() if on_gpu else platform.processor() or "cpu",
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bf16_native": bf16_native,
        "load_average_1min": os.getloadavg()[0],
    }
    print("machine:", ", ".join(f"{k}={v}" for k, v in machine.items()))
    if machine["load_average_1min"] > 0.5:
        print("warning: the machine is busy (load average above 0.5): timings will be low")
    rows = [{"section": "machine", "method": k, "note": str(v)} for k, v in machine.items()]
    peaks = {}
    for precision, dtype in DTYPES.items():
        peaks[precision], size = matmul_peak(dtype, device, 1.0 if fast else 2.0)
        rows.append(
            {
                "section": "peak",
                "precision": precision,
                "gflop_per_s": peaks[precision],
                "batch_size": size,
                "note": f"best {size}x{size} matmul",
            }
        )
        print(f"peak {precision}: {peaks[precision]:.1f} GFLOP/s ({size}² matmul)")
    common = {
        "threads": args.threads,
        "device": device.type,
        "seconds": seconds,
        "memory_budget": args.memory_budget,
    }
    if "grid" in args.sections:
        train_tokens = args.train_tokens or (32768 if on_gpu else 4096)
        for n_context in args.n_context or ([128] if fast else [256, 512, 1024]):
            for d_model in args.d_model or ([32, 64] if fast else [64, 128, 256]):
                cfg = {
                    "d_model": d_model,
                    "n_layers": 2,
                    "n_decoder_layers": 1,
                    "n_heads": 4,
                    "n_context": n_context,
                    "n_inference_context": n_context,
                    "query_chunk_size": QUERY_CHUNK,
                }
                for precision in precisions:
                    params = {
                        **common,
                        "cfg": cfg,
                        "precision": precision,
                        "n_obs": 512 if fast else 4096,
                        "train_tokens": train_tokens,
                        "check_flops": True,
                    }
                    for row in isolated(run_config, params):
                        row["mfu"] = row["gflop_per_s"] / peaks[precision]
                        rows.append({"section": "grid", **row})
                        print(
                            f"grid d={d_model} n_context={n_context} {precision} "
                            f"{row['phase']}: {row['samples_per_s']:.1f} samples/s, "
                            f"MFU {row['mfu']:.0%}"
                        )
    scaling = {
        "samples": {
            "sizes": [1000, 3000] if fast else [1_000, 10_000, 100_000],
            "cfg": {"d_model": 32, "n_heads": 2, "n_context": 64},
            "n_vars": 20_000,
            "nonzero": 100,
        },
        "genes": {
            "sizes": [1000, 5000] if fast else [1_000, 3_000, 10_000, 30_000],
            "cfg": {"d_model": 32, "n_heads": 2, "n_context": 64}
            if fast
            else {"d_model": 128, "n_heads": 4, "n_context": 256},
            "n_obs": 200 if fast else 1000,
            "nonzero": 200,
        },
    }
    for section, spec in scaling.items():
        if section not in args.sections:
            continue
        for size in spec["sizes"]:
            cfg = {"n_layers": 2, "n_decoder_layers": 1, **spec["cfg"]}
            cfg["n_inference_context"] = cfg["n_context"]
            params = {
                **common,
                "cfg": cfg,
                "n_obs": size if section == "samples" else spec["n_obs"],
                "n_vars": size if section == "genes" else spec["n_vars"],
                "nonzero": spec["nonzero"],
            }
            for row in isolated(run_scaling, params):
                rows.append({"section": section, **row})
                print(
                    f"{section}: {row['n_obs']:,} × {row['n_vars']:,}: {row['seconds']:.1f} s, "
                    f"+{row['phase_mb']:.0f} MB (dense {row['dense_mb']:,.0f} MB)"
                )
    if "zeisel" in args.sections:
        for method in ("PCA (scanpy)", "scVI", "GexBERT"):
            params = {
                **common,
                "method": method,
                "precision": precisions[0],
                "n_obs": 500 if fast else None,
            }
            for row in isolated(run_zeisel, params):
                if "gflop_per_s" in row:
                    row["mfu"] = row["gflop_per_s"] / peaks[precisions[0]]
                if "samples_per_s" in row:
                    row["per_peak_gflops"] = row["samples_per_s"] / peaks[precisions[0]]
                rows.append({"section": "zeisel", **row})
                print(f"zeisel {method} {row['phase']}: {row['seconds']:.2f} s")
    pd.set_option("display.width", 200)
    speed_sections = [s for s in ("defaults", "levers", "profile") if s in args.sections]
    if speed_sections:
        report_speedup(args, speed_sections, bf16_native)
    if len(rows) == len(machine) + len(peaks):
        return  # only the default-settings sections ran
    table = pd.DataFrame(rows)
    table.to_csv(results_path("throughput.csv", args), index=False)
    for section, columns in COLUMNS.items():
        part = table[table.section == section]
        if not part.empty:
            print(f"\n== {section}")
            shown = part[[c for c in columns if c in part and part[c].notna().any()]]
            print(shown.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print("\n== targets")
    for line in targets(table, peaks, bf16_native):
        print(line)
    if {"samples", "genes"} & set(table.section):
        plot_scaling(table, results_path("throughput_scaling.png", args))


if __name__ == "__main__":
    main()
