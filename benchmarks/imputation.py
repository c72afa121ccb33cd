"""Imputation under heavy missingness: GexBERT against conventional imputers.

Design (one fixed split of samples per data set: 80 % train, 20 % test, seed 0):

- GexBERT (``d_model=64``, 2 layers, ``n_context=128``, other arguments at their defaults,
  the training scheme included) is pretrained on the training samples only, for a fixed
  number of epochs per data set (``DATASETS``: zeisel and zeisel_shallow 25, tcga_mirna 20,
  gse3143 150; chosen to fit the time budget, not to convergence).
- On the test samples, observed entries are hidden completely at random (MCAR) at 10, 30, 50,
  70 and 90 %, plus structured cases: ``panel``, a random half of the test samples lacks a
  random half of the genes entirely (25 % of the entries), as when cohorts were measured with
  different panels; ``genes 50%`` and ``genes 90%``, every test sample lacks the same random
  50 % or 90 % of the genes (whole-gene restoration, where a learned co-expression prior
  should matter most).
- Every method fills the same hidden entries and sees the same data: the training samples in
  full and what remains of the test samples. Methods: per-gene mean; ``KNNImputer`` (k=10);
  ``IterativeImputer`` (MICE-style, BayesianRidge, ``max_iter=3``, each gene regressed on its
  ``n_nearest_features=20`` most correlated genes, all genes: restricting the predictors, not
  the genes, keeps it within the budget on the same hidden entries; fills clipped to each
  gene's observed range); ``SoftImpute`` (low rank,
  our numpy implementation of Mazumder, Hastie & Tibshirani 2010 with fancyimpute's defaults:
  shrinkage = largest singular value / 50, rank ≤ 100, relative change < 1e-3; fancyimpute
  itself pulls cvxpy, cvxopt and nose and is not maintained); MAGIC (zeisel only, when
  ``magic`` imports, see ``make bench``: scprep's pin of pandas < 2.1 clashes with anndata,
  so magic-impute and scprep are installed without dependencies; MAGIC needs complete input,
  so hidden entries start at the gene mean);
  GexBERT (``get_imputed_expression``, observed values kept).
- Metrics on the hidden entries only, in the model's normalised log space: RMSE, the median
  over genes of the Pearson r between filled and true values (genes with ≥ 5 hidden entries
  and non-constant values; n/a for the per-gene mean), and wall time (GexBERT: inference
  only; its pretraining time is a row of its own).

Scales. zeisel (UMI) and tcga_mirna (reads) hold counts; entries are hidden in the counts.
The metric space is the model's, ``y = log1p(1e4 x / s)``, where the size factor ``s`` of a
test sample is estimated from its *observed* genes with the training data's expected gene
shares (:mod:`gexbert_sc.data._normalization`): normalising before hiding would let each
sample's library size reveal the sum of its hidden counts. Every method imputes these ``y``
values; fills are clipped at 0 (``y ≥ 0``; GexBERT's are through the count scale).
gse3143 holds log2 microarray intensities, used as given.

Counting-noise floor (zeisel). Even an oracle knowing the expected count ``mu`` of a hidden
entry cannot predict the Poisson draw ``k``. Rates are estimated by smoothing over neighbours
found with full profiles: PCA-50 of the full log-normalised profiles of all cells, 15 nearest
neighbours (the cell itself excluded), ``mu = library × mean of the neighbours' count
fractions``. For an entry with size factor ``s`` the truth is ``f(k) = log1p(1e4 k / s)``;
the best predictor under squared error is ``E f(k)`` and its expected squared error is
``Var f(k)``, both computed exactly as sums over the Poisson pmf of ``k``. The row
``Poisson floor`` is ``sqrt(mean Var f(k))`` over the hidden entries (an expectation, no
draws); ``kNN-rate oracle`` is the measured RMSE of predicting ``E f(k)``. A gap between the
two is variation beyond Poisson (biological overdispersion, rate-estimation error).

Verdict: at each missing rate GexBERT is compared with the best baseline (lowest RMSE; the
oracle rows are not baselines) by a bootstrap over test samples (1,000 resamples) of the
RMSE difference: a win or loss when the 95 % interval excludes 0, a tie otherwise.
At 50 % MCAR, ``tl.impute(n_samples=8)`` on the first 150 test samples also gives the spread
of GexBERT's restorations over random contexts; the GexBERT row reports its Spearman
correlation with the absolute error and the fraction of hidden entries within 2 spreads of
the truth (the spread is context sensitivity, not a calibrated error).

Data and cost. zeisel: 3,005 cells, the 1,000 genes of highest variance of the training
cells' log-normalised values (of 4,000); zeisel_shallow: the same cells, counts downsampled
to at most 1,500 UMIs per cell (``sc.pp.downsample_counts``, seed 0; median 9,711 before)
and log-normalised before setup, as a new user of shallow data would (so no noise floor:
the model reads log values, and the metric space is these values), the 1,000 genes of
highest variance of its training cells; tcga_mirna: 2,578 samples × 239 miRNAs;
survset gse3143: 158 samples, the 1,000 genes of highest variance in the training samples
(of 8,659). Gene subsets keep the run near 40 minutes on an idle 2-core CPU (one process
per data set group, see below; most of it GexBERT pretraining, then inference, KNN and
IterativeImputer); under other load it takes longer,
and OpenBLAS threads then spin: set ``OPENBLAS_NUM_THREADS=1`` there (SoftImpute took 100×
longer with two threads on a loaded machine).

Rerun: ``python benchmarks/imputation.py`` (``--datasets zeisel`` to select; ``--fast`` for a
smoke run on a few hundred samples and genes, 2 epochs, written to ``imputation_fast.*``;
``--tag`` to suffix the output files).
Writes ``benchmarks/results/imputation.csv`` and ``imputation.png`` (RMSE vs missing rate)
and prints the table and the verdict. The committed results come from two processes run side
by side with ``GEXBERT_CPU_BF16=0 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1`` (fp32 training
on every CPU, one core each): ``--datasets zeisel zeisel_shallow --tag single_cell`` and
``--datasets tcga_mirna gse3143 --tag bulk``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
import torch
from _baselines import (
    iterative_impute,
    knn_impute,
    magic_available,
    magic_impute,
    per_gene_mean,
    soft_impute,
)
from _common import (
    SMALL_MODEL,
    benchmark_parser,
    log_normalise,
    results_path,
    split_samples,
    timed,
)
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

import gexbert_sc
from gexbert_sc.data._normalization import TARGET_SUM, to_model_scale
from gexbert_sc.metrics import mask_entries, mask_genes, masked_rmse, median_gene_correlation

RATES = (0.1, 0.3, 0.5, 0.7, 0.9)
PANEL = "panel"
#: whole-gene cases: every test sample lacks this share of the genes
GENE_RATES = {"genes 50%": 0.5, "genes 90%": 0.9}
#: UMIs per cell of the shallow single-cell case
SHALLOW_UMIS = 1500
SPREAD_RATE = 0.5
N_SPREAD_SAMPLES = 8
N_SPREAD_OBS = 150
MODEL = {**SMALL_MODEL, "n_layers": 2}
TRAIN = {"batch_size": 64, "enable_progress_bar": False}
FAST = {"n_obs": 300, "n_genes": 150, "max_epochs": 2}


@dataclass(frozen=True)
class Dataset:
    """How to load a data set, how many genes to keep, how long to pretrain."""

    load: Callable[[], ad.AnnData]
    n_genes: int | None
    max_epochs: int
    single_cell: bool


def zeisel_shallow() -> ad.AnnData:
    """zeisel's counts downsampled to at most ``SHALLOW_UMIS`` per cell, then log-normalised.

    The shallow case a new user meets (median ≈ 1,500 UMIs per cell instead of ≈ 13,000),
    log-normalised before setup as scanpy tutorials do.
    """
    adata = gexbert_sc.datasets.zeisel()
    sc.pp.downsample_counts(adata, counts_per_cell=SHALLOW_UMIS, random_state=0)
    log_normalise(adata)
    return adata


DATASETS = {
    "zeisel": Dataset(gexbert_sc.datasets.zeisel, 1000, 25, True),
    "zeisel_shallow": Dataset(zeisel_shallow, 1000, 25, True),
    "tcga_mirna": Dataset(gexbert_sc.datasets.tcga_mirna, None, 20, False),
    "gse3143": Dataset(lambda: gexbert_sc.datasets.survset("gse3143"), 1000, 150, False),
}


# ---------------------------------------------------------------------- data
def load_split(name: str, fast: bool) -> tuple[np.ndarray, np.ndarray, bool]:
    """Dense train and test values (raw scale) of the kept genes, and whether they are counts."""
    spec = DATASETS[name]
    adata = spec.load()
    x = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    x = x.astype(np.float32)
    is_counts = bool(np.all(x == np.round(x)) and (x >= 0).all())
    train_rows, test_rows = split_samples(x.shape[0], 0, n_used=FAST["n_obs"] if fast else None)
    train, test = x[train_rows], x[test_rows]
    n_genes = FAST["n_genes"] if fast else spec.n_genes
    if n_genes is not None and n_genes < x.shape[1]:
        log_train = np.log1p(train / train.sum(1, keepdims=True) * TARGET_SUM)
        variance = (log_train if is_counts else train).var(axis=0)
        keep = np.sort(np.argsort(variance)[::-1][:n_genes])
        train, test = train[:, keep], test[:, keep]
    return train, test, is_counts


def hide(test: np.ndarray, condition: float | str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """MCAR at a rate, half of the genes for half of the samples (``panel``), or a share of
    the genes for every test sample (``GENE_RATES``): the masked values and the mask."""
    if condition == PANEL:
        return mask_genes(test, 0.5, sample_fraction=0.5, seed=seed)
    if condition in GENE_RATES:
        return mask_genes(test, GENE_RATES[condition], seed=seed)
    return mask_entries(test, condition, seed=seed)


def log_space(
    x: np.ndarray, gene_share: torch.Tensor, is_counts: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The model's log values of ``x`` (NaN = missing) and size factors from observed genes."""
    observed = ~np.isnan(x)
    y, factors = to_model_scale(
        torch.from_numpy(np.nan_to_num(x)), torch.from_numpy(observed), gene_share, is_counts
    )
    return np.where(observed, y.numpy(), np.nan), factors.numpy()


# ---------------------------------------------------------------------- GexBERT
def gexbert_fill(
    model: gexbert_sc.GexBERT, masked: np.ndarray, factors: np.ndarray, is_counts: bool
) -> np.ndarray:
    """GexBERT's restoration of the NaN entries of ``masked``, in the model's log space."""
    adata = ad.AnnData(masked, var=model.adata.var)
    values = model.get_imputed_expression(adata, return_numpy=True)
    return np.log1p(values / factors[:, None] * TARGET_SUM) if is_counts else values


# ---------------------------------------------------------------------- noise floor
def neighbour_rates(counts: np.ndarray, n_neighbors: int = 15) -> np.ndarray:
    """Expected counts: each cell's library times its neighbours' mean count fractions."""
    library = counts.sum(axis=1, keepdims=True)
    fractions = counts / np.maximum(library, 1.0)
    pcs = PCA(n_components=50, random_state=0).fit_transform(np.log1p(fractions * TARGET_SUM))
    _, idx = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(pcs).kneighbors(pcs)
    return library * fractions[idx[:, 1:]].mean(axis=1)


def poisson_moments(mu: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``log1p(scale k)`` for ``k ~ Poisson(mu)`` (sums over the pmf)."""
    mean, var = np.empty_like(mu), np.empty_like(mu)
    order = np.argsort(mu)
    start = 0
    while start < len(order):
        # entries sorted by rate, in chunks whose pmf grid covers the largest rate
        top = mu[order[min(start + 4096, len(order)) - 1]]
        k = np.arange(int(np.ceil(top + 12 * np.sqrt(top) + 20)) + 1)
        rows = order[start : start + max(1, min(4096, 4_000_000 // len(k)))]
        pmf = stats.poisson.pmf(k[None, :], mu[rows, None])
        f = np.log1p(scale[rows, None] * k[None, :])
        mean[rows] = (pmf * f).sum(axis=1)
        var[rows] = np.maximum((pmf * f**2).sum(axis=1) - mean[rows] ** 2, 0.0)
        start += len(rows)
    return mean, var


def floor_rows(
    base: dict, rates: np.ndarray, factors: np.ndarray, truth: np.ndarray, hidden: np.ndarray
) -> list[dict]:
    """The expected Poisson floor and the measured RMSE of the kNN-rate oracle."""
    scale = (TARGET_SUM / factors)[np.nonzero(hidden)[0]]
    mean, var = poisson_moments(rates[hidden], scale)
    oracle = truth.copy()
    oracle[hidden] = mean
    return [
        {**base, "method": "Poisson floor (expected)", "rmse": float(np.sqrt(var.mean()))},
        {
            **base,
            "method": "kNN-rate oracle (measured)",
            "rmse": masked_rmse(oracle, truth, hidden),
            "median_gene_r": median_gene_correlation(oracle, truth, hidden),
        },
    ]


# ---------------------------------------------------------------------- scores
def spread_columns(
    model: gexbert_sc.GexBERT,
    masked: np.ndarray,
    filled: np.ndarray,
    truth: np.ndarray,
    hidden: np.ndarray,
) -> dict:
    """How the spread of ``tl.impute(n_samples=...)`` relates to GexBERT's absolute error.

    Computed on the first ``N_SPREAD_OBS`` test samples (each costs ``N_SPREAD_SAMPLES``
    extra passes of the model).
    """
    masked, filled, truth, hidden = (a[:N_SPREAD_OBS] for a in (masked, filled, truth, hidden))
    adata = ad.AnnData(masked, var=model.adata.var)
    _, seconds = timed(gexbert_sc.tl.impute, adata, model, n_samples=N_SPREAD_SAMPLES)
    spread = adata.layers["gexbert_imputed_std"][hidden]
    error = np.abs(filled - truth)[hidden]
    return {
        "spread_error_spearman": float(stats.spearmanr(spread, error).statistic),
        "within_2_spreads": float(np.mean(error <= 2 * spread)),
        "spread_seconds": seconds,
    }


def verdict(fills: dict, truth: np.ndarray, hidden: np.ndarray) -> tuple[str, str, float, float]:
    """GexBERT against the best baseline: outcome, baseline, and the 95 % interval of Δ RMSE.

    The interval of RMSE(GexBERT) - RMSE(baseline) comes from 1,000 bootstrap resamples of
    the test samples; it decides a win (below 0), a loss (above 0) or a tie.
    """
    baselines = {m: f for m, (f, _) in fills.items() if m != "GexBERT"}
    best = min(baselines, key=lambda m: masked_rmse(baselines[m], truth, hidden))
    count = hidden.sum(axis=1)
    sse = [
        np.where(hidden, (f - truth) ** 2, 0.0).sum(axis=1)
        for f in (fills["GexBERT"][0], baselines[best])
    ]
    idx = np.random.default_rng(0).integers(0, len(count), (1000, len(count)))
    n = count[idx].sum(axis=1)
    diff = np.sqrt(sse[0][idx].sum(axis=1) / n) - np.sqrt(sse[1][idx].sum(axis=1) / n)
    low, high = np.percentile(diff, [2.5, 97.5])
    outcome = "wins" if high < 0 else "loses" if low > 0 else "ties"
    return outcome, best, float(low), float(high)


# ---------------------------------------------------------------------- one data set
def pretrain(train: np.ndarray, max_epochs: int) -> tuple[gexbert_sc.GexBERT, float]:
    """GexBERT pretrained on the training samples, and the seconds it took."""
    adata = ad.AnnData(train, var=pd.DataFrame(index=[f"g{j}" for j in range(train.shape[1])]))
    gexbert_sc.GexBERT.setup_anndata(adata)
    model = gexbert_sc.GexBERT(adata, **MODEL)
    _, seconds = timed(model.train, max_epochs, **TRAIN)
    return model, seconds


def run(name: str, fast: bool, max_epochs: int | None) -> tuple[list[dict], list[str]]:
    """Table rows and verdict lines for one data set."""
    spec = DATASETS[name]
    train, test, is_counts = load_split(name, fast)
    epochs = max_epochs or (FAST["max_epochs"] if fast else spec.max_epochs)
    model, seconds = pretrain(train, epochs)
    print(f"{name}: train {train.shape}, test {test.shape}, {epochs} epochs, {seconds:.0f} s")
    share = model.module.gene_share.cpu()
    y_train, _ = log_space(train, share, is_counts)
    methods: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "per-gene mean": per_gene_mean,
        "KNNImputer (k=10)": knn_impute,
        "IterativeImputer": iterative_impute,
        "SoftImpute": soft_impute,
    }
    if spec.single_cell and magic_available():
        methods["MAGIC"] = magic_impute
    elif spec.single_cell:
        print("MAGIC skipped: `magic` does not import (see `make bench` to install it).")
    with_floor = spec.single_cell and is_counts
    rates = neighbour_rates(np.vstack([train, test]))[len(train) :] if with_floor else None
    rows = [{"dataset": name, "missing": "pretrain", "method": "GexBERT", "seconds": seconds}]
    details = []
    for i, condition in enumerate((*RATES, PANEL, *GENE_RATES)):
        masked, hidden = hide(test, condition, seed=1 + i)
        y_masked, factors = log_space(masked, share, is_counts)
        truth = np.log1p(test / factors[:, None] * TARGET_SUM) if is_counts else test
        label = condition if isinstance(condition, str) else f"{round(condition * 100)}%"
        base = {"dataset": name, "missing": label, "hidden_fraction": hidden.mean()}
        y_all = np.vstack([y_train, y_masked])
        fills = {method: timed(fill, y_all) for method, fill in methods.items()}
        fills = {method: (filled[len(train) :], s) for method, (filled, s) in fills.items()}
        fills["GexBERT"] = timed(gexbert_fill, model, masked, factors, is_counts)
        if is_counts:  # log1p values are >= 0
            fills = {method: (np.maximum(filled, 0.0), s) for method, (filled, s) in fills.items()}
        for method, (filled, s) in fills.items():
            row = {
                **base,
                "method": method,
                "rmse": masked_rmse(filled, truth, hidden),
                "median_gene_r": np.nan
                if method == "per-gene mean"
                else median_gene_correlation(filled, truth, hidden),
                "seconds": s,
            }
            if method == "GexBERT" and condition == SPREAD_RATE:
                row.update(spread_columns(model, masked, filled, truth, hidden))
            rows.append(row)
        if rates is not None:
            rows += floor_rows(base, rates, factors, truth, hidden)
        details.append((label, *verdict(fills, truth, hidden)))
    return rows, verdict_lines(name, details, pd.DataFrame(rows))


def verdict_lines(name: str, details: list[tuple], table: pd.DataFrame) -> list[str]:
    """One summary line per data set, then one line per missing rate."""
    by_outcome = {
        outcome: [label for label, o, *_ in details if o == outcome]
        for outcome in ("wins", "ties", "loses")
    }
    summary = "; ".join(
        f"{outcome} at {', '.join(labels)}" for outcome, labels in by_outcome.items() if labels
    )
    lines = [f"VERDICT {name}: GexBERT {summary} (vs the best baseline at each rate)."]
    rmses = table.set_index(["missing", "method"])["rmse"]
    for label, outcome, best, low, high in details:
        line = (
            f"  {label:>5}: GexBERT {rmses[label, 'GexBERT']:.3f} vs {best} "
            f"{rmses[label, best]:.3f}, 95% CI of the difference [{low:+.3f}, {high:+.3f}]: "
            f"{outcome}"
        )
        if (label, "Poisson floor (expected)") in rmses.index:
            line += f"; Poisson floor {rmses[label, 'Poisson floor (expected)']:.3f}"
        lines.append(line)
    return lines


# ---------------------------------------------------------------------- outputs
def plot(table: pd.DataFrame, path: Path) -> None:
    """RMSE against the MCAR missing rate, one panel per data set."""
    labels = [f"{round(r * 100)}%" for r in RATES]
    names = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        sub = table[(table["dataset"] == name) & table["missing"].isin(labels)]
        for method, group in sub.groupby("method", sort=False):
            x = [int(label[:-1]) for label in group["missing"]]
            style = {"linestyle": "--", "color": "black"} if "floor" in method else {}
            ax.plot(x, group["rmse"], marker="o", label=method, **style)
        ax.set(title=name, xlabel="hidden entries (%)", ylabel="RMSE on hidden entries (log)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], "a few hundred samples and genes, 2 epochs")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument(
        "--max-epochs", type=int, default=None, help="override the epochs of DATASETS"
    )
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("scvi").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    rows, lines = [], []
    for name in args.datasets:
        dataset_rows, dataset_lines = run(name, args.fast, args.max_epochs)
        rows += dataset_rows
        lines += dataset_lines
    table = pd.DataFrame(rows)
    table.to_csv(results_path("imputation.csv", args), index=False)
    plot(table, results_path("imputation.png", args))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep=""))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
