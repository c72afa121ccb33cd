"""Benchmark of the inference context: accuracy and cost of ``n_inference_context``, bucketing.

At inference each sample is read through a fixed context of up to ``n_inference_context`` of
its observed genes (non-zero first). For each data set (``pbmc68k``, ``zeisel``,
``tcga_mirna``; log-normalised as in ``core_embedding_restoration.py``) and each of several
random splits (80 % train, 20 % test; split ``s`` uses ``numpy`` seed ``s`` and a model
seeded with ``s``), one GexBERT model (``SMALL_MODEL``: d_model 64, n_context 128) is
pretrained on the training samples; then, for each ``n_inference_context`` in ``CONTEXTS``,
on the same model:

- **embedding**: ``get_latent_representation`` of the training and test samples, wall time,
  and the k=15 nearest-neighbour label transfer accuracy (train → test);
- **restoration**: ``get_imputed_expression`` of the test samples with 30 % of their entries
  hidden completely at random, wall time, and the RMSE on the hidden entries (log space);
- the mean context length and the share of padding tokens in the minibatches (scvi-tools'
  batch size 128), with and without length bucketing, and the encoder FLOPs per embedded
  sample including padding (:func:`gexbert_sc.module.encoder_flops`).

On split 0, at 1,024, the same calls also run the way the getters ran before length bucketing
(``unbucketed``: minibatches in sample order, padded to their longest context, and all genes
decoded before observed values are put back); the largest difference between the two paths'
outputs is recorded (``max_diff_*``: they must agree to float rounding). The speed-up is the
unbucketed time at 1,024 (the previous default) over the bucketed time at each context, on
split 0 (both paths on the same model, one after the other). The
matmul peak of the machine (fp32, best square product, as in ``throughput.py``) is measured
first, for the hardware-normalised rate: samples embedded per second per GFLOP/s of peak.

The chosen context is the smallest whose mean kNN accuracy and mean RMSE are, on every data
set, within the split-to-split standard deviation of those at 1,024 (accuracy not lower by
more, RMSE not higher by more).

Settings chosen to fit about 20 minutes on a loaded 2-core CPU, one process per data set
(``OMP_NUM_THREADS=1``): zeisel and tcga_mirna are subsampled to 900 samples
(``split_samples(n_used=...)``) and trained 3 epochs, pbmc68k (700 cells) 8 epochs, 3 splits
each: models short of convergence, compared with themselves across contexts.

Rerun: ``OMP_NUM_THREADS=1 python benchmarks/inference_context.py`` (``--fast`` for a smoke
run: 2 splits, 1 epoch, 300 samples; ``--datasets``, ``--splits``, ``--tag``). As measured, one
process per data set, then the summary of the three:
``python benchmarks/inference_context.py --datasets zeisel --tag zeisel`` (and ``pbmc68k``,
``tcga_mirna``), then ``python benchmarks/inference_context.py --summarise
benchmarks/results/inference_context_{pbmc68k,zeisel,tcga_mirna}.csv``. Writes
``benchmarks/results/inference_context.csv`` (one row per data set, split, context and path),
``inference_context_summary.csv`` and ``inference_context.png``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
import torch
from _common import (
    SMALL_MODEL,
    benchmark_parser,
    log_normalise,
    read_parts,
    results_path,
    split_samples,
)
from _common import timed as timed_call
from core_embedding_restoration import hide_at_random
from throughput import matmul_peak

import gexbert_sc
from gexbert_sc._constants import MODULE_KEYS, QUERY_CHUNK_SIZE, REGISTRY_KEYS
from gexbert_sc.data._normalization import to_input_scale
from gexbert_sc.metrics import knn_transfer_accuracy, masked_rmse
from gexbert_sc.module import encoder_flops

CONTEXTS = (64, 128, 256, 512, 1024)
PREVIOUS_DEFAULT = 1024
BATCH_SIZE = 128
HIDDEN_FRACTION = 0.3


@dataclass(frozen=True)
class DataSet:
    """A data set of the benchmark: label column, epochs and samples used."""

    label_key: str
    max_epochs: int
    n_used: int | None = None


DATASETS = {
    "pbmc68k": DataSet("bulk_labels", 8),
    "zeisel": DataSet("cell_type", 3, n_used=900),
    "tcga_mirna": DataSet("cancer_type", 3, n_used=900),
}


def load(name: str) -> sc.AnnData:
    """Log-normalised dense values (pbmc68k is log-normalised already)."""
    adata = getattr(gexbert_sc.datasets, name)()
    if name != "pbmc68k":
        log_normalise(adata)
    if not isinstance(adata.X, np.ndarray):
        adata.X = adata.X.toarray()
    adata.X = adata.X.astype(np.float32)
    return adata


def context_lengths(model: gexbert_sc.GexBERT, adata: sc.AnnData) -> np.ndarray:
    """Each sample's inference context length, in sample order."""
    return model.module.inference_context_lengths(torch.as_tensor(adata.X)).numpy()


def padding_cost(calls: list[np.ndarray], d_model: int, n_layers: int) -> dict[str, dict]:
    """Padding share and encoder FLOPs per sample of getter calls, unbucketed and bucketed.

    ``calls`` holds the context lengths of the samples of each call, in sample order.
    """
    cost = {}
    for path in PATHS:
        tokens = flops = 0.0
        for lengths in calls:
            ordered = np.sort(lengths) if path == "bucketed" else lengths
            for start in range(0, len(ordered), BATCH_SIZE):
                batch = ordered[start : start + BATCH_SIZE]
                width = max(int(batch.max()), 1)
                tokens += width * len(batch)
                flops += encoder_flops(1 + width, d_model, n_layers) * len(batch)
        n_samples = sum(len(lengths) for lengths in calls)
        cost[path] = {
            "padding_share": 1 - sum(lengths.sum() for lengths in calls) / tokens,
            "embed_gflop_per_sample": flops / n_samples / 1e9,
        }
    return cost


@torch.inference_mode()
def unbucketed_embedding(model: gexbert_sc.GexBERT, adata: sc.AnnData) -> np.ndarray:
    """The embedding as the getter computed it before bucketing: batches in sample order."""
    model.module.eval()
    return np.vstack(
        [
            model.module.inference(**model.module._get_inference_input(tensors))[
                MODULE_KEYS.Z_KEY
            ].numpy()
            for tensors in model.minibatches(adata, batch_size=BATCH_SIZE)
        ]
    )


@torch.inference_mode()
def unbucketed_imputation(model: gexbert_sc.GexBERT, adata: sc.AnnData) -> np.ndarray:
    """Imputation as before bucketing: batches in sample order, every gene decoded."""
    model.module.eval()
    gene_idx = torch.arange(adata.n_vars)
    blocks = []
    for tensors in model.minibatches(adata, batch_size=BATCH_SIZE):
        out = model.module.inference(**model.module._get_inference_input(tensors))
        restored = model._restore(out, gene_idx, QUERY_CHUNK_SIZE)
        block = to_input_scale(
            restored, out[MODULE_KEYS.SIZE_FACTOR_KEY], bool(model.module.input_is_counts)
        )
        x = tensors[REGISTRY_KEYS.X_KEY]
        blocks.append(torch.where(out[MODULE_KEYS.OBSERVED_KEY], x, block).numpy())
    return np.vstack(blocks)


def bucketed_embedding(model: gexbert_sc.GexBERT, adata: sc.AnnData) -> np.ndarray:
    """The getter's embedding (length buckets)."""
    return model.get_latent_representation(adata, batch_size=BATCH_SIZE)


def bucketed_imputation(model: gexbert_sc.GexBERT, adata: sc.AnnData) -> np.ndarray:
    """The getter's imputation (length buckets, only missing genes decoded)."""
    return model.get_imputed_expression(adata, batch_size=BATCH_SIZE, return_numpy=True)


PATHS = {
    "bucketed": (bucketed_embedding, bucketed_imputation),
    "unbucketed": (unbucketed_embedding, unbucketed_imputation),
}


def run_split(name: str, adata: sc.AnnData, spec: DataSet, seed: int, fast: bool) -> list[dict]:
    """Every context and path of one split; one row per context and path."""
    n_used = 300 if fast else spec.n_used
    train_rows, test_rows = split_samples(adata.n_obs, seed, n_used=n_used)
    train, test = adata[train_rows].copy(), adata[test_rows].copy()
    masked, hidden = hide_at_random(test, HIDDEN_FRACTION, seed + 1)
    gexbert_sc.GexBERT.setup_anndata(train)
    model = gexbert_sc.GexBERT(train, **SMALL_MODEL, seed=seed)
    epochs = 1 if fast else spec.max_epochs
    _, train_seconds = timed_call(model.train, max_epochs=epochs, enable_progress_bar=False)
    labels = train.obs[spec.label_key].to_numpy(), test.obs[spec.label_key].to_numpy()
    module = model.module
    rows = []
    for context in CONTEXTS:
        module.n_inference_context = context
        calls = [context_lengths(model, train), context_lengths(model, test)]
        lengths = np.concatenate(calls)
        cost = padding_cost(calls, module.d_model, len(module.encoder))
        outputs = {}
        for path, (embed, impute) in PATHS.items():
            if path == "unbucketed" and (seed != 0 or context != PREVIOUS_DEFAULT):
                continue
            (z_train, z_test), embed_seconds = timed_call(
                lambda embed=embed: (embed(model, train), embed(model, test))
            )
            filled, restore_seconds = timed_call(impute, model, masked)
            outputs[path] = (np.vstack([z_train, z_test]), filled)
            rows.append(
                {
                    "dataset": name,
                    "split": seed,
                    "n_inference_context": context,
                    "path": path,
                    "knn_transfer": knn_transfer_accuracy(z_train, labels[0], z_test, labels[1]),
                    "rmse_30pct_hidden": masked_rmse(filled, test.X, hidden),
                    "embed_seconds": embed_seconds,
                    "n_embedded": len(lengths),
                    "restore_seconds": restore_seconds,
                    "n_restored": test.n_obs,
                    "n_genes": test.n_vars,
                    "mean_context": lengths.mean(),
                    "train_seconds": train_seconds,
                    **cost[path],
                }
            )
        if "unbucketed" in outputs:
            for key, position in (("max_diff_embedding", 0), ("max_diff_imputation", 1)):
                diff = np.abs(outputs["bucketed"][position] - outputs["unbucketed"][position])
                rows[-1][key] = rows[-2][key] = float(np.nanmax(diff))
    return rows


def summarise(table: pd.DataFrame, peak: float) -> pd.DataFrame:
    """Mean and sd over splits per data set, context and path; rates, speed-ups."""
    table = table.assign(
        embed_per_s=table.n_embedded / table.embed_seconds,
        restore_per_s=table.n_restored / table.restore_seconds,
    )
    summary = (
        table.groupby(["dataset", "n_inference_context", "path"], sort=False)
        .agg(
            knn_mean=("knn_transfer", "mean"),
            knn_sd=("knn_transfer", "std"),
            rmse_mean=("rmse_30pct_hidden", "mean"),
            rmse_sd=("rmse_30pct_hidden", "std"),
            embed_per_s=("embed_per_s", "mean"),
            restore_per_s=("restore_per_s", "mean"),
            mean_context=("mean_context", "mean"),
            padding_share=("padding_share", "mean"),
            embed_gflop_per_sample=("embed_gflop_per_sample", "mean"),
            n_splits=("split", "count"),
        )
        .reset_index()
    )
    # speed-ups on split 0, where both paths ran one after the other on the same model
    first = table[table.split == 0]
    keys = ["dataset", "n_inference_context", "path"]
    before = first[
        (first.path == "unbucketed") & (first.n_inference_context == PREVIOUS_DEFAULT)
    ].set_index("dataset")
    speedups = first[keys].assign(
        embed_speedup=first.embed_per_s / first.dataset.map(before.embed_per_s),
        restore_speedup=first.restore_per_s / first.dataset.map(before.restore_per_s),
    )
    summary = summary.merge(speedups, on=keys, how="left")
    summary["embed_per_s_per_gflops_peak"] = summary.embed_per_s / peak
    return summary


def choose_context(summary: pd.DataFrame) -> int:
    """Smallest context within the split-to-split sd of 1,024's accuracy and RMSE everywhere."""
    part = summary[summary.path == "bucketed"].set_index(["dataset", "n_inference_context"])
    reference = part.xs(PREVIOUS_DEFAULT, level=1)
    for context in sorted(part.index.get_level_values(1).unique()):
        scores = part.xs(context, level=1)
        knn_ok = scores.knn_mean >= reference.knn_mean - reference.knn_sd.fillna(0)
        rmse_ok = scores.rmse_mean <= reference.rmse_mean + reference.rmse_sd.fillna(0)
        if (knn_ok & rmse_ok).all():
            return int(context)
    return PREVIOUS_DEFAULT


def plot(summary: pd.DataFrame, path: Path) -> None:
    """kNN accuracy, RMSE (mean ± sd over splits) and samples/s against the context size."""
    datasets = list(dict.fromkeys(summary.dataset))
    fig, axes = plt.subplots(3, len(datasets), figsize=(4.5 * len(datasets), 9), squeeze=False)
    for col, name in enumerate(datasets):
        part = summary[summary.dataset == name]
        bucketed = part[part.path == "bucketed"]
        x = bucketed.n_inference_context
        axes[0, col].errorbar(x, bucketed.knn_mean, yerr=bucketed.knn_sd, marker="o", capsize=2)
        axes[0, col].set_title(f"{name} ({int(bucketed.n_splits.max())} splits)")
        axes[0, col].set_ylabel("kNN label transfer")
        axes[1, col].errorbar(x, bucketed.rmse_mean, yerr=bucketed.rmse_sd, marker="o", capsize=2)
        axes[1, col].set_ylabel("RMSE, 30 % hidden (log)")
        for label, rows in part.groupby("path", sort=False):
            axes[2, col].plot(
                rows.n_inference_context, rows.embed_per_s, "o-", label=f"embed, {label}"
            )
            axes[2, col].plot(
                rows.n_inference_context, rows.restore_per_s, "s--", label=f"restore, {label}"
            )
        axes[2, col].set_yscale("log")
        axes[2, col].set_ylabel("samples / s (one core)")
        for ax in axes[:, col]:
            ax.set_xscale("log", base=2)
            ax.set_xticks(CONTEXTS, [str(c) for c in CONTEXTS])
        axes[2, col].set_xlabel("n_inference_context")
    axes[2, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], "2 splits, 1 epoch, 300 samples")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--splits", type=int, default=None, help="random splits (default 3)")
    parser.add_argument(
        "--summarise",
        nargs="+",
        type=Path,
        default=None,
        help="summarise these per-split CSVs of earlier runs (e.g. one per data set) instead",
    )
    args = parser.parse_args()
    if args.summarise:
        table = read_parts(args.summarise)
        report(table, table.peak_gflop_per_s.mean(), args)
        return
    peak, size = matmul_peak(torch.float32, torch.device("cpu"), 1.0 if args.fast else 2.0)
    print(
        f"fp32 matmul peak: {peak:.1f} GFLOP/s ({size}² matmul, {torch.get_num_threads()} threads)"
    )
    n_splits = 2 if args.fast else (args.splits or 3)
    rows = []
    for name in args.datasets:
        adata = load(name)
        for seed in range(n_splits):
            rows += run_split(name, adata, DATASETS[name], seed, args.fast)
            table = pd.DataFrame(rows).assign(peak_gflop_per_s=peak)
            table.to_csv(results_path("inference_context.csv", args), index=False)
            print(f"{name}: split {seed} done", flush=True)
    report(table, peak, args)


def report(table: pd.DataFrame, peak: float, args) -> None:
    """Write the summary and the figure; print the table, the differences and the choice."""
    summary = summarise(table, peak)
    summary.to_csv(results_path("inference_context_summary.csv", args), index=False)
    plot(summary, results_path("inference_context.png", args))
    pd.set_option("display.width", 250)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    diffs = table[["max_diff_embedding", "max_diff_imputation"]].max()
    print(f"bucketed vs unbucketed outputs, largest difference: {diffs.to_dict()}")
    print(f"chosen n_inference_context: {choose_context(summary)}")


if __name__ == "__main__":
    main()
