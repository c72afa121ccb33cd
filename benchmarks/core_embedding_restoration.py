"""Benchmark for the core model: embedding quality and restoration against simple baselines.

For each data set (``pbmc68k``, ``zeisel``) and each of several random splits of the samples
(80 % train, 20 % test; split ``s`` uses ``numpy`` seed ``s`` and a model seeded with ``s``),
in one run:

- GexBERT is pretrained on the training samples only, and PCA-50 is fitted on them (same
  log-normalised input);
- **label transfer** (the main embedding score): a k=15 nearest-neighbour classifier fitted
  on the training samples' embedding predicts the test samples' labels (accuracy);
- **label transfer, 50 % missing**: the same, with half of every test sample's entries
  hidden at random (GexBERT reads the rest; PCA gets the hidden entries filled with the
  training mean of the gene);
- **test-only cross-validation**: 5-fold k=15 kNN accuracy among the test samples alone (the
  score of the first version of this benchmark; noisy on pbmc68k, whose 140 test cells leave
  112 neighbours to vote from);
- restoration: on test samples, 30 % of the observed entries are hidden completely at random;
  RMSE on the hidden entries (log space) of GexBERT vs per-gene mean filling vs
  ``sklearn.impute.KNNImputer`` (k=10, fitted on training + test samples).

The table gives, per data set and score, the mean and standard deviation over splits and, for
the kNN scores, the mean paired difference GexBERT − PCA-50 with the number of splits GexBERT
wins (ties count half).

Rerun: ``python benchmarks/core_embedding_restoration.py`` (27 min measured on 2 idle CPU cores;
``--fast`` for a smoke run, ``--splits`` to change the number of splits, ``--tag`` to suffix
the output files). Writes
``benchmarks/results/core_embedding_restoration.csv`` (one row per split, method and score),
``core_embedding_restoration_summary.csv`` and ``core_embedding_restoration.png``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
from _baselines import knn_impute, pca50, per_gene_mean
from _common import (
    SMALL_MODEL,
    benchmark_parser,
    log_normalise,
    results_path,
    split_samples,
    timed,
)

import gexbert_sc
from gexbert_sc.metrics import knn_label_accuracy, knn_transfer_accuracy, mask_entries, masked_rmse

GEXBERT, PCA50 = "GexBERT X_gexbert", "PCA-50"
KNN_SCORES = ("knn_transfer", "knn_transfer_50pct_missing", "knn_cv_test")


def load(name: str) -> tuple[sc.AnnData, str]:
    """Log-normalised dense data and its label column."""
    if name == "pbmc68k":
        return gexbert_sc.datasets.pbmc68k(), "bulk_labels"
    adata = gexbert_sc.datasets.zeisel()
    log_normalise(adata)
    adata.X = adata.X.toarray()
    return adata, "cell_type"


def hide_at_random(adata: sc.AnnData, fraction: float, seed: int) -> tuple[sc.AnnData, np.ndarray]:
    """Copy of ``adata`` with ``fraction`` of its entries set to NaN, and the hidden mask."""
    masked = adata.copy()
    masked.X, hidden = mask_entries(adata.X, fraction, seed=seed)
    return masked, hidden


def gexbert_embeddings(model: gexbert_sc.GexBERT, data: dict[str, sc.AnnData]) -> dict:
    """``X_gexbert`` of each AnnData of ``data``."""
    return {key: model.get_latent_representation(adata) for key, adata in data.items()}


def pca50_embeddings(data: dict[str, sc.AnnData]) -> dict:
    """PCA-50 fitted on the training samples; missing entries get the training gene means."""
    train = data["train"].X
    pca = pca50(train)
    return {key: pca.transform(per_gene_mean(adata.X, train)) for key, adata in data.items()}


def run_split(
    name: str, adata: sc.AnnData, label_key: str, seed: int, max_epochs: int
) -> list[dict]:
    """All scores of one split; one row per method and score."""
    train_rows, test_rows = split_samples(adata.n_obs, seed)
    train, test = adata[train_rows].copy(), adata[test_rows].copy()
    train_labels, test_labels = train.obs[label_key].to_numpy(), test.obs[label_key].to_numpy()
    missing50, _ = hide_at_random(test, 0.5, seed + 1000)
    data = {"train": train, "test": test, "missing50": missing50}

    gexbert_sc.GexBERT.setup_anndata(train)
    model = gexbert_sc.GexBERT(train, **SMALL_MODEL, seed=seed)
    _, train_time = timed(model.train, max_epochs=max_epochs, enable_progress_bar=False)
    gexbert, gexbert_time = timed(gexbert_embeddings, model, data)
    pca, pca_time = timed(pca50_embeddings, data)

    rows = []
    for method, emb, seconds in (
        (GEXBERT, gexbert, train_time + gexbert_time),
        (PCA50, pca, pca_time),
    ):
        scores = {
            "knn_transfer": knn_transfer_accuracy(
                emb["train"], train_labels, emb["test"], test_labels
            ),
            "knn_transfer_50pct_missing": knn_transfer_accuracy(
                emb["train"], train_labels, emb["missing50"], test_labels
            ),
            "knn_cv_test": knn_label_accuracy(emb["test"], test_labels),
        }
        rows += [
            {
                "dataset": name,
                "split": seed,
                "task": task,
                "method": method,
                "value": value,
                "seconds": seconds,
            }
            for task, value in scores.items()
        ]
    return rows + restoration_rows(name, seed, model, train, test)


def restoration_rows(
    name: str, seed: int, model: gexbert_sc.GexBERT, train: sc.AnnData, test: sc.AnnData
) -> list[dict]:
    """RMSE on 30 % of the test entries hidden at random: GexBERT, gene mean, KNNImputer."""
    masked, hidden = hide_at_random(test, 0.3, seed + 1)
    restored, gexbert_time = timed(model.get_imputed_expression, masked, return_numpy=True)
    knn_filled, knn_time = timed(knn_impute, np.vstack([train.X, masked.X]))
    fills = (
        ("GexBERT", restored, gexbert_time),
        ("per-gene mean", per_gene_mean(masked.X, train.X), 0.0),
        ("KNNImputer (k=10)", knn_filled[train.n_obs :], knn_time),
    )
    return [
        {
            "dataset": name,
            "split": seed,
            "task": "rmse_30pct_hidden",
            "method": method,
            "value": masked_rmse(filled, test.X, hidden),
            "seconds": seconds,
        }
        for method, filled, seconds in fills
    ]


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over splits; for kNN scores, the paired GexBERT − PCA-50 difference."""
    summary = (
        table.groupby(["dataset", "task", "method"], sort=False)["value"]
        .agg(mean="mean", sd="std", n_splits="count")
        .reset_index()
    )
    knn = table[table["task"].isin(KNN_SCORES)]
    wide = knn.pivot_table(index=["dataset", "task", "split"], columns="method", values="value")
    diff = wide[GEXBERT] - wide[PCA50]
    paired = pd.DataFrame(
        {
            "diff_vs_pca50": diff.groupby(level=[0, 1]).mean(),
            "splits_won": ((diff > 0) + 0.5 * (diff == 0)).groupby(level=[0, 1]).sum(),
        }
    ).reset_index()
    paired["method"] = GEXBERT
    return summary.merge(paired, on=["dataset", "task", "method"], how="left")


def plot(summary: pd.DataFrame, path: Path) -> None:
    """Bar chart of the kNN scores, mean ± sd over splits, per data set."""
    knn = summary[summary["task"].isin(KNN_SCORES)]
    datasets = list(dict.fromkeys(knn["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.5), squeeze=False)
    for ax, name in zip(axes[0], datasets, strict=True):
        part = knn[knn["dataset"] == name]
        x = np.arange(len(KNN_SCORES))
        for offset, method in ((-0.2, GEXBERT), (0.2, PCA50)):
            rows = part[part["method"] == method].set_index("task").loc[list(KNN_SCORES)]
            ax.bar(x + offset, rows["mean"], 0.4, yerr=rows["sd"].fillna(0), label=method)
        ax.set_xticks(x, ["transfer", "transfer,\n50 % missing", "CV on test"])
        ax.set_ylim(max(0.0, part["mean"].min() - 0.15), 1.0)
        ax.set_title(f"{name} (mean ± sd, {int(part['n_splits'].max())} splits)")
        ax.set_ylabel("kNN label accuracy")
    axes[0, 0].legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], "2 epochs and 2 splits, a smoke run")
    parser.add_argument("--datasets", nargs="+", default=["pbmc68k", "zeisel"])
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument(
        "--splits", type=int, default=None, help="random splits (default: pbmc68k 5, zeisel 3)"
    )
    args = parser.parse_args()
    epochs = {"pbmc68k": 30, "zeisel": 10}
    splits = {"pbmc68k": 5, "zeisel": 3}
    rows = []
    for name in args.datasets:
        adata, label_key = load(name)
        max_epochs = 2 if args.fast else (args.max_epochs or epochs[name])
        n_splits = 2 if args.fast else (args.splits or splits[name])
        for seed in range(n_splits):
            rows += run_split(name, adata, label_key, seed, max_epochs)
            print(f"{name}: split {seed} done", flush=True)
    table = pd.DataFrame(rows)
    summary = summarise(table)
    table.to_csv(results_path("core_embedding_restoration.csv", args), index=False)
    summary.to_csv(results_path("core_embedding_restoration_summary.csv", args), index=False)
    plot(summary, results_path("core_embedding_restoration.png", args))
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
