"""Restoration ablation: which training scheme and profile summary beat the classical imputers.

The experiments behind the defaults of ``withhold_range``, ``mask_ratio``, ``profile_fit``
and the profile ridge (recorded in ``docs/design.md``, section *Restoration*). One variant per
run, on the split and genes of ``benchmarks/imputation.py`` (80/20 split, seed 0; zeisel and
zeisel_shallow: 1,000 genes of highest training variance; tcga_mirna: all 239 miRNAs), the
small model of that benchmark unless ``--default-width``:

- restoration RMSE and median per-gene r on the hidden entries of the test samples, at 50 %
  and 90 % MCAR (``mcar50``, ``mcar90``) and with 50 % / 90 % of the genes hidden in every
  test sample (``genes50``, ``genes90``), against SoftImpute, ``KNNImputer`` and the per-gene
  mean on the same hidden entries (fills clipped at 0: every set is on a log1p scale);
- the embedding: kNN label transfer from the training cells to the test cells, with all
  genes and with half of the entries hidden (``knn_transfer``, ``knn_transfer_50``).

Variants (``--variant``): ``legacy`` (0.1's scheme: 30 % of the context hidden, targets
outside the context, rescaled projection), ``withhold`` (withholding, rescaled projection),
``default`` (withholding and the ridge profile fit: what ``GexBERT(adata)`` does); options
``--epochs``, ``--lr``, ``--bottleneck-weight``, ``--ridge``, ``--default-width``.

Rerun, one core per run: ``GEXBERT_CPU_BF16=0 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
python benchmarks/restoration_ablation.py tcga_mirna --variant legacy`` (3–8 minutes at the
small width). Each run appends one JSON line to ``benchmarks/results/restoration_ablation.jsonl``
and prints it.
"""

from __future__ import annotations

import json
import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
from _baselines import knn_impute, per_gene_mean, soft_impute
from _common import RESULTS, benchmark_parser, split_samples, timed
from imputation import DATASETS, FAST, MODEL, TRAIN, gexbert_fill, load_split, log_space

import gexbert_sc
import gexbert_sc.module._encoder as encoder_module
from gexbert_sc.data._normalization import TARGET_SUM
from gexbert_sc.metrics import (
    knn_transfer_accuracy,
    mask_entries,
    mask_genes,
    masked_rmse,
    median_gene_correlation,
)

LABELS = {"zeisel": "cell_type", "zeisel_shallow": "cell_type", "tcga_mirna": "cancer_type"}
VARIANTS = {
    "legacy": {"withhold_range": None, "mask_ratio": 0.3, "profile_fit": False},
    "withhold": {"profile_fit": False},
    "default": {},
}
CONDITIONS = {
    "mcar50": (mask_entries, 0.5),
    "mcar90": (mask_entries, 0.9),
    "genes50": (mask_genes, 0.5),
    "genes90": (mask_genes, 0.9),
}
BASELINES = {"soft": soft_impute, "knn": knn_impute, "mean": per_gene_mean}


def labels_of(name: str, fast: bool) -> tuple[np.ndarray, np.ndarray]:
    """Training and test labels of a data set, on the split of :func:`load_split`."""
    labels = DATASETS[name].load().obs[LABELS[name]].astype(str).to_numpy()
    train_rows, test_rows = split_samples(len(labels), 0, n_used=FAST["n_obs"] if fast else None)
    return labels[train_rows], labels[test_rows]


def restoration_scores(
    model: gexbert_sc.GexBERT, train: np.ndarray, test: np.ndarray, is_counts: bool
) -> dict[str, float]:
    """RMSE and median per-gene r of GexBERT and the baselines on each hidden-entry case."""
    share = model.module.gene_share.cpu()
    y_train, _ = log_space(train, share, is_counts)
    scores = {}
    for i, (case, (hide, rate)) in enumerate(CONDITIONS.items()):
        masked, hidden = hide(test, rate, seed=1 + i)
        y_masked, factors = log_space(masked, share, is_counts)
        truth = np.log1p(test / factors[:, None] * TARGET_SUM) if is_counts else test
        filled = np.maximum(gexbert_fill(model, masked, factors, is_counts), 0.0)
        scores[case] = masked_rmse(filled, truth, hidden)
        scores[f"{case}_r"] = median_gene_correlation(filled, truth, hidden)
        y_all = np.vstack([y_train, y_masked])
        for method, fill in BASELINES.items():
            baseline = np.maximum(fill(y_all)[len(train) :], 0.0)
            scores[f"{case}_{method}"] = masked_rmse(baseline, truth, hidden)
    return scores


def embedding_scores(
    model: gexbert_sc.GexBERT, test: np.ndarray, labels: tuple[np.ndarray, np.ndarray]
) -> dict[str, float]:
    """kNN label transfer from the training to the test cells, all genes and half hidden."""
    reference = model.get_latent_representation()
    half, _ = mask_entries(test, 0.5, seed=99)
    scores = {}
    for key, values in (("knn_transfer", test), ("knn_transfer_50", half)):
        query = model.get_latent_representation(ad.AnnData(values, var=model.adata.var))
        scores[key] = knn_transfer_accuracy(reference, labels[0], query, labels[1])
    return scores


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], "a few hundred samples and genes, 2 epochs")
    parser.add_argument("dataset", choices=list(LABELS))
    parser.add_argument("--variant", choices=list(VARIANTS), default="default")
    parser.add_argument("--epochs", type=int, default=None, help="default: the benchmark's")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--bottleneck-weight", type=float, default=1.0)
    parser.add_argument("--ridge", type=float, default=encoder_module.PROFILE_RIDGE)
    parser.add_argument("--default-width", action="store_true", help="GexBERT's own width")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    encoder_module.PROFILE_RIDGE = args.ridge
    train, test, is_counts = load_split(args.dataset, args.fast)
    labels = labels_of(args.dataset, args.fast)
    adata = ad.AnnData(train, var=pd.DataFrame(index=[f"g{j}" for j in range(train.shape[1])]))
    gexbert_sc.GexBERT.setup_anndata(adata)
    width = {} if args.default_width else MODEL
    hparams = {**width, **VARIANTS[args.variant], "bottleneck_weight": args.bottleneck_weight}
    model = gexbert_sc.GexBERT(adata, **hparams)
    epochs = 2 if args.fast else args.epochs or DATASETS[args.dataset].max_epochs
    if args.default_width and args.epochs is None:
        epochs = None  # GexBERT's default length
    _, seconds = timed(model.train, epochs, **{**TRAIN, "lr": args.lr})
    row = {
        "dataset": args.dataset,
        **{k: v for k, v in vars(args).items() if k not in ("dataset", "tag")},
        "train_seconds": round(seconds),
        **restoration_scores(model, train, test, is_counts),
        **embedding_scores(model, test, labels),
    }
    line = json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    print(line)
    RESULTS.mkdir(exist_ok=True)
    suffix = "_fast" if args.fast else ""
    with open(RESULTS / f"restoration_ablation{suffix}.jsonl", "a") as handle:
        handle.write(line + "\n")


if __name__ == "__main__":
    main()
