"""Benchmark for the core model: embedding quality and restoration against simple baselines.

For each data set (``pbmc68k``, ``zeisel``) on one fixed split of samples (80 % train,
20 % test, seed 0), in one run:

- GexBERT is pretrained on the training samples only;
- embedding: 5-fold kNN (k=15) label accuracy on the test samples of ``X_gexbert`` vs a
  50-component PCA fitted on the training samples (same log-normalised input);
- restoration: on test samples, 30 % of the observed entries are hidden completely at random;
  RMSE on the hidden entries (log space) of GexBERT vs per-gene mean filling vs
  ``sklearn.impute.KNNImputer`` (k=10, fitted on training + test samples).

Rerun: ``python benchmarks/core_embedding_restoration.py`` (``--fast`` for a smoke run).
Writes ``benchmarks/results/core_embedding_restoration.csv`` and prints a table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
from sklearn.decomposition import PCA
from sklearn.impute import KNNImputer

import gexbert_sc
from gexbert_sc.metrics import knn_label_accuracy

RESULTS = Path(__file__).parent / "results"


def load(name: str) -> tuple[sc.AnnData, str]:
    """Log-normalised dense data and its label column."""
    if name == "pbmc68k":
        return gexbert_sc.datasets.pbmc68k(), "bulk_labels"
    adata = gexbert_sc.datasets.zeisel()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.X = adata.X.toarray()
    return adata, "cell_type"


def run(name: str, max_epochs: int, hide: float = 0.3) -> list[dict]:
    adata, label_key = load(name)
    rng = np.random.default_rng(0)
    order = rng.permutation(adata.n_obs)
    n_train = int(0.8 * adata.n_obs)
    train, test = adata[np.sort(order[:n_train])].copy(), adata[np.sort(order[n_train:])].copy()
    rows = []
    gexbert_sc.GexBERT.setup_anndata(train)
    model = gexbert_sc.GexBERT(train, d_model=64, n_context=128)
    start = time.perf_counter()
    model.train(max_epochs=max_epochs, enable_progress_bar=False)
    train_time = time.perf_counter() - start
    labels = test.obs[label_key]
    z = model.get_latent_representation(test)
    rows.append(
        {
            "dataset": name,
            "task": "knn_accuracy",
            "method": "GexBERT X_gexbert",
            "value": knn_label_accuracy(z, labels),
            "seconds": train_time,
        }
    )
    start = time.perf_counter()
    pca = PCA(n_components=50, random_state=0).fit(train.X)
    rows.append(
        {
            "dataset": name,
            "task": "knn_accuracy",
            "method": "PCA-50",
            "value": knn_label_accuracy(pca.transform(test.X), labels),
            "seconds": time.perf_counter() - start,
        }
    )
    truth = test.X.copy()
    hidden = np.random.default_rng(1).random(truth.shape) < hide
    masked = test.copy()
    masked.X[hidden] = np.nan

    def rmse(filled: np.ndarray) -> float:
        return float(np.sqrt(np.mean((filled[hidden] - truth[hidden]) ** 2)))

    start = time.perf_counter()
    restored = model.get_imputed_expression(masked, return_numpy=True)
    rows.append(
        {
            "dataset": name,
            "task": f"rmse_{int(hide * 100)}pct_hidden",
            "method": "GexBERT",
            "value": rmse(restored),
            "seconds": time.perf_counter() - start,
        }
    )
    mean_fill = np.where(hidden, train.X.mean(0), truth)
    rows.append(
        {
            "dataset": name,
            "task": f"rmse_{int(hide * 100)}pct_hidden",
            "method": "per-gene mean",
            "value": rmse(mean_fill),
            "seconds": 0.0,
        }
    )
    start = time.perf_counter()
    knn = KNNImputer(n_neighbors=10).fit(np.vstack([train.X, masked.X]))
    rows.append(
        {
            "dataset": name,
            "task": f"rmse_{int(hide * 100)}pct_hidden",
            "method": "KNNImputer (k=10)",
            "value": rmse(knn.transform(masked.X)),
            "seconds": time.perf_counter() - start,
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="2 epochs, for a smoke run")
    parser.add_argument("--datasets", nargs="+", default=["pbmc68k", "zeisel"])
    parser.add_argument("--max-epochs", type=int, default=None)
    args = parser.parse_args()
    epochs = {"pbmc68k": 30, "zeisel": 10}
    rows = []
    for name in args.datasets:
        max_epochs = 2 if args.fast else (args.max_epochs or epochs[name])
        rows += run(name, max_epochs)
    table = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    suffix = "_fast" if args.fast else ""
    table.to_csv(RESULTS / f"core_embedding_restoration{suffix}.csv", index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
