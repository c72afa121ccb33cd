"""Benchmark: calibrated intervals of restored values, against the intervals a user can build.

For each data set of the scoreboard (``defaults.py``: the same loaders, the same 80/20 split of
seed 0), GexBERT is trained on the training samples with every argument at its default;
``train()`` ends by calibrating the intervals on the validation samples it held out. On the
test samples, observed entries are hidden at random (10, 30, 50, 70, 90 %) and all genes but
a random panel (16 and 64 genes, the same for every sample) are hidden; on the same hidden
entries, at nominal coverages 50 / 80 / 90 / 95 %:

- ``GexBERT``: ``impute_expression(query, coverage=...)``;
- ``per-gene quantiles``: each gene's training quantiles (no point prediction);
- ``KNNImputer + conformal``: KNNImputer (k=10) restorations, with split-conformal quantiles
  of the absolute residuals per gene, calibrated on the same validation samples as GexBERT
  with entries hidden by the *same* condition as the test (a pooled quantile for genes with
  too few residuals), the lower bound floored at 0 on non-negative data as GexBERT's is;
- ``GexBERT spread × z``: the restoration ± the normal quantile × the spread of 8 random
  contexts (``n_samples=8``), uncalibrated.

Scores: empirical coverage over the hidden entries; the mean coverage of the worst decile of
genes (genes with ≥ 20 hidden entries), beside ``worst_decile_noise``: what a perfectly
calibrated method would show there from the test entries' binomial noise alone; mean width;
CRPS (``scoringrules``; quantiles at 5, 15, ..., 95 % for the interval methods, the normal
distribution for the spread).

Goals (issue 27): |empirical − nominal| ≤ 0.02 at every level, data set and condition; worst
decile ≥ nominal − 0.05; mean width at 90 % ≤ 0.8 × KNNImputer + conformal's.

Writes ``benchmarks/results/uncertainty.csv`` (one row per data set, condition, method and
nominal level), ``uncertainty_summary.md`` (the goals per data set and condition) and
``uncertainty.png`` (reliability curves).

Rerun: ``GEXBERT_CPU_BF16=0 OMP_NUM_THREADS=1 python benchmarks/uncertainty.py``
(``--datasets``, ``--fast`` for a smoke run, ``--tag`` to suffix the outputs;
``--summarise A.csv B.csv --tag T`` joins parts of a run). ``scoringrules`` comes with
``make bench`` (without it the CRPS column is empty).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from _baselines import knn_impute
from _common import (
    add_summarise_option,
    benchmark_parser,
    draw_panel,
    finish_figure,
    markdown_table,
    only_panel,
    quiet_training_logs,
    read_parts,
    results_path,
    split_samples,
    timed,
)
from defaults import DATASETS, FAST, load
from scipy.stats import norm

import gexbert_sc
from gexbert_sc.metrics import (
    interval_coverage,
    interval_width,
    mask_entries,
    worst_gene_coverage,
)

RATES = (0.1, 0.3, 0.5, 0.7, 0.9)
PANEL_SIZES = (16, 64)
NOMINAL = (0.5, 0.8, 0.9, 0.95)
#: Central intervals whose bounds are the quantiles the CRPS is computed from.
CRPS_COVERAGES = (0.1, 0.3, 0.5, 0.7, 0.9)
N_SPREAD_SAMPLES = 8
MIN_GENE_ENTRIES = 20
GEXBERT, MARGINAL, KNN, SPREAD = (
    "GexBERT",
    "per-gene quantiles",
    "KNNImputer + conformal",
    "GexBERT spread × z",
)
#: Goals of issue 27.
TOLERANCE, WORST_MARGIN, WIDTH_RATIO = 0.02, 0.05, 0.8


def conditions(n_vars: int, seed: int) -> list[tuple[str, Callable]]:
    """``(name, hide)`` for every random rate and panel size; ``hide(x, draw)`` returns
    ``(masked, hidden)`` (``draw`` seeds the random entries; a panel is fixed by ``seed``)."""

    def random(rate: float) -> Callable:
        return lambda x, draw: mask_entries(x, rate, seed=draw)

    def panel(genes: np.ndarray) -> Callable:
        def hide(x: np.ndarray, draw: int) -> tuple[np.ndarray, np.ndarray]:
            masked = only_panel(x, genes)
            return masked, np.isnan(masked) & np.isfinite(x)

        return hide

    out = [(f"random {rate * 100:g} %", random(rate)) for rate in RATES]
    for size in (s for s in PANEL_SIZES if 2 * s < n_vars):
        out.append((f"panel {size} genes", panel(draw_panel(n_vars, size, seed))))
    return out


def quantile_levels() -> np.ndarray:
    """Quantile levels of the CRPS: both ends of every interval in ``CRPS_COVERAGES``."""
    ends = [(1 - c) / 2 for c in CRPS_COVERAGES] + [(1 + c) / 2 for c in CRPS_COVERAGES]
    return np.sort(ends)


def bounds_to_quantiles(bounds: dict[float, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``(..., n_levels)`` quantiles from central intervals at ``CRPS_COVERAGES``."""
    lows = [bounds[c][0] for c in reversed(CRPS_COVERAGES)]
    highs = [bounds[c][1] for c in CRPS_COVERAGES]
    return np.stack(lows + highs, axis=-1)


def crps(truth: np.ndarray, quantiles: np.ndarray | None, normal=None) -> float:
    """Mean CRPS (``scoringrules``) of quantile forecasts, or of a normal ``(mu, sigma)``."""
    try:
        import scoringrules as sr
    except ImportError:
        return float("nan")
    if normal is not None:
        return float(np.mean(sr.crps_normal(truth, normal[0], np.maximum(normal[1], 1e-6))))
    return float(np.mean(sr.crps_quantile(truth, np.sort(quantiles, axis=-1), quantile_levels())))


def gexbert_bounds(model, query: ad.AnnData, levels: list[float]) -> dict:
    """``{coverage: (lower, upper)}`` from one ``impute_expression`` call."""
    result = model.impute_expression(query, coverage=levels)
    return {c: (result.lower[i], result.upper[i]) for i, c in enumerate(levels)}


def marginal_bounds(train_x: np.ndarray, levels: list[float], shape) -> dict:
    """Each gene's training quantiles, the same for every sample."""
    out = {}
    for c in levels:
        low, high = np.nanquantile(train_x, [(1 - c) / 2, (1 + c) / 2], axis=0)
        out[c] = (np.broadcast_to(low, shape), np.broadcast_to(high, shape))
    return out


def conformal_quantile(residuals: np.ndarray, coverage: float) -> float:
    """Split-conformal quantile of absolute residuals (``inf`` when too few)."""
    n = len(residuals)
    rank = int(np.ceil((n + 1) * coverage))
    return float(np.sort(residuals)[rank - 1]) if rank <= n else float("inf")


def knn_conformal_bounds(
    reference: np.ndarray,
    calibration: np.ndarray,
    test_masked: np.ndarray,
    hidden_calibration: tuple[np.ndarray, np.ndarray],
    levels: list[float],
    floor: float,
) -> tuple[dict, float]:
    """KNNImputer restorations with per-gene split-conformal intervals.

    ``hidden_calibration`` is ``(masked, hidden)`` of the calibration samples, hidden as the
    test condition hides. Returns the bounds and the seconds taken.
    """
    cal_masked, cal_hidden = hidden_calibration
    cal_filled, s1 = timed(knn_impute, np.vstack([reference, cal_masked]))
    test_filled, s2 = timed(knn_impute, np.vstack([reference, calibration, test_masked]))
    cal_filled = cal_filled[len(reference) :]
    test_filled = test_filled[len(reference) + len(calibration) :]
    residual = np.abs(cal_filled - calibration)
    out = {}
    for c in levels:
        pooled = conformal_quantile(residual[cal_hidden], c)
        per_gene = np.array(
            [
                conformal_quantile(residual[cal_hidden[:, g], g], c)
                if cal_hidden[:, g].sum() >= MIN_GENE_ENTRIES
                else np.inf
                for g in range(calibration.shape[1])
            ]
        )
        q = np.where(np.isfinite(per_gene), per_gene, pooled)
        out[c] = (np.maximum(test_filled - q, floor), test_filled + q)
    return out, s1 + s2


def spread_bounds(model, query: ad.AnnData, levels: list[float]) -> tuple[dict, tuple]:
    """Restoration ± the normal quantile × the spread of random contexts (uncalibrated)."""
    result = model.impute_expression(query, n_samples=N_SPREAD_SAMPLES)
    out = {}
    for c in levels:
        z = norm.ppf((1 + c) / 2)
        out[c] = (result.values - z * result.spread, result.values + z * result.spread)
    return out, (result.values, result.spread)


def noise_floor(hidden: np.ndarray, coverage: float, seed: int = 0, draws: int = 200) -> float:
    """Worst-decile coverage a perfectly calibrated method shows from binomial noise alone."""
    counts = hidden.sum(axis=0)
    counts = counts[counts >= MIN_GENE_ENTRIES]
    if counts.size == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    worst = max(1, int(round(0.1 * counts.size)))
    observed = rng.binomial(counts[None, :], coverage, size=(draws, counts.size)) / counts
    return float(np.mean(np.sort(observed, axis=1)[:, :worst]))


def run(name: str, seed: int, fast: bool) -> list[dict]:
    """Every method on every condition of one data set."""
    adata = load(name, fast)
    train_rows, test_rows = split_samples(adata.n_obs, seed)
    train, test = adata[train_rows].copy(), adata[test_rows].copy()
    gexbert_sc.GexBERT.setup_anndata(train)
    model = gexbert_sc.GexBERT(train)
    _, train_seconds = timed(model.train, **({"max_epochs": FAST["max_epochs"]} if fast else {}))
    # calibrate again, to time it (same seed and samples: the same calibration)
    _, calibration_seconds = timed(model.calibrate)
    validation = np.asarray(model.validation_indices)
    others = np.setdiff1d(np.arange(train.n_obs), validation)
    floor = 0.0 if np.nanmin(train.X) >= 0 else -np.inf
    levels = sorted(set(NOMINAL) | set(CRPS_COVERAGES))
    print(
        f"{name}: {train.shape}, {len(model.history['train_loss'])} epochs in "
        f"{train_seconds:.0f} s; calibration {calibration_seconds:.0f} s on "
        f"{len(validation)} samples",
        flush=True,
    )
    base = {
        "dataset": name,
        "held_out": DATASETS[name].held_out,
        "seed": seed,
        "train_seconds": train_seconds,
        "calibration_seconds": calibration_seconds,
        "n_calibration_samples": len(validation),
    }
    rows = []
    truth = test.X
    for i, (condition, hide) in enumerate(conditions(test.n_vars, seed)):
        masked, hidden = hide(truth, seed * 100 + i)
        query = ad.AnnData(masked, var=test.var[[]])
        gex, gex_seconds = timed(gexbert_bounds, model, query, levels)
        calibration = train.X[validation]
        knn, knn_seconds = knn_conformal_bounds(
            train.X[others],
            calibration,
            masked,
            hide(calibration, seed * 100 + i + 50),
            levels,
            floor,
        )
        (spread, normal), spread_seconds = timed(spread_bounds, model, query, levels)
        methods = {
            GEXBERT: (gex, gex_seconds, None),
            MARGINAL: (marginal_bounds(train.X, levels, truth.shape), 0.0, None),
            KNN: (knn, knn_seconds, None),
            SPREAD: (spread, spread_seconds, normal),
        }
        for method, (bounds, seconds, normal_fit) in methods.items():
            if normal_fit is None:
                score = crps(truth[hidden], bounds_to_quantiles(bounds)[hidden])
            else:
                score = crps(truth[hidden], None, (normal_fit[0][hidden], normal_fit[1][hidden]))
            for level in NOMINAL:
                lower, upper = bounds[level]
                rows.append(
                    {
                        **base,
                        "condition": condition,
                        "observed_share": float(np.isfinite(masked).mean()),
                        "method": method,
                        "nominal": level,
                        "coverage": interval_coverage(truth, lower, upper, hidden),
                        "worst_decile": worst_gene_coverage(
                            truth, lower, upper, hidden, min_entries=MIN_GENE_ENTRIES
                        ),
                        "worst_decile_noise": noise_floor(hidden, level),
                        "mean_width": interval_width(lower, upper, hidden),
                        "crps": score,
                        "seconds": seconds,
                        "n_entries": int(hidden.sum()),
                    }
                )
        done = pd.DataFrame(rows[-len(methods) * len(NOMINAL) :])
        print(
            done.pivot(index="nominal", columns="method", values="coverage").round(3).to_string(),
            flush=True,
        )
    return rows


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """GexBERT per data set and condition at every nominal level, with the goals checked."""
    gex = table[table["method"] == GEXBERT].set_index(["dataset", "condition", "nominal"])
    knn = table[table["method"] == KNN].set_index(["dataset", "condition", "nominal"])
    summary = gex[["coverage", "worst_decile", "worst_decile_noise", "mean_width", "crps"]].copy()
    summary["knn_width"] = knn["mean_width"]
    summary["knn_coverage"] = knn["coverage"]
    summary["coverage_ok"] = (summary["coverage"] - summary.index.get_level_values(2)).abs() <= (
        TOLERANCE + 1e-9
    )
    summary["worst_ok"] = summary["worst_decile"] >= summary.index.get_level_values(2) - (
        WORST_MARGIN + 1e-9
    )
    summary["width_ratio"] = summary["mean_width"] / summary["knn_width"]
    return summary.reset_index()


def goal_lines(summary: pd.DataFrame) -> list[str]:
    """One line per goal: how many (data set, condition, level) cases meet it."""
    at90 = summary[summary["nominal"] == 0.9]
    return [
        f"- |coverage − nominal| ≤ {TOLERANCE}: {int(summary['coverage_ok'].sum())} of "
        f"{len(summary)} cases (largest miss "
        f"{(summary['coverage'] - summary['nominal']).abs().max():.3f}).",
        f"- worst decile ≥ nominal − {WORST_MARGIN}: {int(summary['worst_ok'].sum())} of "
        f"{len(summary)} cases.",
        f"- width at 90 % ≤ {WIDTH_RATIO} × KNNImputer + conformal: "
        f"{int((at90['width_ratio'] <= WIDTH_RATIO).sum())} of {len(at90)} cases "
        f"(median ratio {at90['width_ratio'].median():.2f}).",
    ]


def plot(table: pd.DataFrame, path) -> None:
    """Reliability curves: empirical against nominal coverage, one panel per data set."""
    names = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        part = table[table["dataset"] == name]
        for method, rows in part.groupby("method", sort=False):
            mean = rows.groupby("nominal")["coverage"].agg(["mean", "min", "max"])
            ax.errorbar(
                mean.index,
                mean["mean"],
                yerr=[mean["mean"] - mean["min"], mean["max"] - mean["mean"]],
                marker="o",
                markersize=3,
                capsize=2,
                label=method,
            )
        ax.plot([0.45, 1], [0.45, 1], color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("nominal coverage")
        ax.set_ylabel("empirical (mean, range over conditions)")
    finish_figure(fig, axes[0][0], path, loc="upper left")


def report(table: pd.DataFrame, args: argparse.Namespace) -> None:
    """Write the CSV, the summary and the figure; print the goals."""
    table.to_csv(results_path("uncertainty.csv", args), index=False)
    summary = summarise(table)
    means = (
        table.groupby(["dataset", "method", "nominal"], sort=False)[
            ["coverage", "worst_decile", "mean_width", "crps"]
        ]
        .mean()
        .reset_index()
    )
    lines = [
        "# Calibrated intervals (issue 27)",
        "",
        "Mean over the conditions (random 10-90 %, panels of 16 and 64 genes):",
        "",
        markdown_table(means),
        "",
        "GexBERT per condition, with the goals:",
        "",
        markdown_table(summary),
        "",
        *goal_lines(summary),
    ]
    text = "\n".join(lines) + "\n"
    results_path("uncertainty_summary.md", args).write_text(text)
    plot(table, results_path("uncertainty.png", args))
    print(text)


def main() -> None:
    """Run the benchmark (or summarise saved parts)."""
    parser = benchmark_parser(__doc__.splitlines()[0], "subsampled data, 1 epoch")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--seed", type=int, default=0)
    add_summarise_option(parser)
    args = parser.parse_args()
    if args.summarise:
        report(read_parts(args.summarise, ("condition",)), args)
        return
    quiet_training_logs()
    rows = []
    for name in args.datasets:
        rows += run(name, args.seed, args.fast)
        pd.DataFrame(rows).to_csv(results_path("uncertainty.csv", args), index=False)
    report(pd.DataFrame(rows), args)


if __name__ == "__main__":
    main()
