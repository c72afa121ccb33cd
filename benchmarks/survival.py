"""Benchmark: survival from limited panels, with and without restored prognostic anchor genes.

For each SurvSet cohort (``gse1992``, ``gse4335``, ``gse3143``, ``vdv``: breast; ``DLBCL``:
lymphoma), repeated stratified 5-fold cross-validation (stratified by event; ``--repeats``
repeats). In each fold, on the training samples only:

- GexBERT is pretrained on the full profiles (per fold, so that no test sample is ever read:
  pretraining on the pooled breast cohorts would have more samples but would read the test
  fold's expression);
- the ``N_ANCHORS`` anchors are the top genes by univariate Cox score test
  (:func:`gexbert_sc.tl.select_anchor_genes`);
- :class:`~gexbert_sc.GexBERTSurvival` is fine-tuned on the pretrained model.

Then every training and test sample is measured only on a random panel (one per size and
fold, the same for every method), and the methods are scored by Harrell's C-index on the test
fold:

1. ``Cox (panel)``: elastic-net Cox (``_baselines.ElasticNetCox``) on the panel genes;
2. ``Cox (panel + restored anchors)``: the same on the panel genes plus the anchors the panel
   missed, restored by GexBERT from the panel (:func:`gexbert_sc.tl.impute` with ``genes=``);
3. ``Cox (panel + true anchors)``: the same with the anchors' true values — the ceiling that
   restoration can reach;
4. ``Cox (GexBERT embedding)``: elastic-net Cox on the embedding of the panel;
5. ``Cox (PCA-200, all genes)``: elastic-net Cox on ``min(200, n_train - 1)`` principal
   components of the full expression (panel-free reference);
6. ``GexBERTSurvival``: the fine-tuned Cox head reading the panel.

Printed and written to ``benchmarks/results/survival.csv`` (one row per fold, panel and
method), ``survival_summary.csv`` (mean ± sd of the C-index; the paired difference restored −
panel with a two-sided Wilcoxon signed-rank test across folds) and ``survival.png`` (C-index
against panel size).

Rerun: ``GEXBERT_CPU_BF16=0 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python
benchmarks/survival.py`` (``--cohorts``, ``--repeats``, ``--folds`` to run some folds only,
``--fast`` for a smoke run, ``--tag`` to suffix the outputs; the fold table is written after
every fold, and ``--summarise A.csv B.csv --tag T`` summarises parts of a run together).
scikit-survival (GPL-3) comes with ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import logging

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from _baselines import ElasticNetCox
from _common import (
    ALL,
    SMALL_MODEL,
    add_summarise_option,
    benchmark_parser,
    dense,
    draw_panel,
    finish_figure,
    only_panel,
    plot_methods,
    quiet_training_logs,
    read_parts,
    results_path,
    timed,
)
from scipy.stats import wilcoxon
from sklearn.decomposition import PCA
from sklearn.model_selection import RepeatedStratifiedKFold
from sklearn.preprocessing import StandardScaler

import gexbert_sc
from gexbert_sc.metrics import concordance_index

COHORTS = ("gse1992", "gse4335", "gse3143", "vdv", "DLBCL")
PANEL_SIZES = (64, 128, 256, 512, 1024)
N_ANCHORS = 50
N_FOLDS = 5
# panels of up to 1,024 genes are read whole: every fold of this benchmark ran with the
# inference context of 1,024 (the package default until 2026-12-03, now 256)
MODEL = {**SMALL_MODEL, "n_inference_context": 1024}
PRETRAIN = {"max_epochs": 40, "batch_size": 32, "enable_progress_bar": False}
# no validation split: the training folds are small, and early stopping is not used
SURVIVAL_TRAIN = {"max_epochs": 60, "lr": 1e-3, "train_size": 1.0, "enable_progress_bar": False}
FAST = {"epochs": 2, "panel_sizes": (64, 256), "folds": 2}
PANEL = "Cox (panel)"
RESTORED = "Cox (panel + restored anchors)"
TRUE = "Cox (panel + true anchors)"


def cox_risk(x_train: np.ndarray, x_test: np.ndarray, train: ad.AnnData) -> np.ndarray:
    """Test risks of an elastic-net Cox model fitted on the training samples."""
    time, event = train.obs["time"].to_numpy(), train.obs["event"].to_numpy().astype(bool)
    return ElasticNetCox().fit(x_train, time, event).predict(x_test)


def panel_view(x: np.ndarray, panel: np.ndarray, like: ad.AnnData) -> ad.AnnData:
    """An AnnData of ``like``'s samples and genes measured only on ``panel`` (NaN elsewhere)."""
    return ad.AnnData(only_panel(x, panel), obs=like.obs[[]].copy(), var=like.var[[]].copy())


def with_anchors(
    x_panel: np.ndarray, panel: np.ndarray, anchors: np.ndarray, values: np.ndarray
) -> np.ndarray:
    """Panel genes, then the anchors the panel did not measure (their columns of ``values``)."""
    missed = np.setdiff1d(anchors, panel)
    return np.hstack([x_panel, values[:, missed]])


def restored_values(model: gexbert_sc.GexBERT, view: ad.AnnData, anchors: list[str]) -> np.ndarray:
    """The panel with the anchors restored next to it (``tl.impute(..., genes=anchors)``)."""
    gexbert_sc.tl.impute(view, model, genes=anchors)
    return view.layers["gexbert_imputed"]


def run_fold(
    name: str, adata: ad.AnnData, split: tuple[int, int, np.ndarray, np.ndarray], fast: bool
) -> list[dict]:
    """Every method on every panel of one fold; one row per method and panel size."""
    repeat, fold, train_rows, test_rows = split
    train, test = adata[train_rows].copy(), adata[test_rows].copy()
    x_train, x_test = dense(train), dense(test)
    seed = 100 * repeat + fold
    gexbert_sc.tl.select_anchor_genes(train, "time", "event", n_genes=N_ANCHORS)
    anchor_names = train.uns["gexbert_anchor"]["genes"]
    anchors = np.flatnonzero(train.var["gexbert_anchor"].to_numpy())

    epochs = {"max_epochs": FAST["epochs"]} if fast else {}
    gexbert_sc.GexBERT.setup_anndata(train)
    pretrained = gexbert_sc.GexBERT(train, **MODEL, seed=seed)
    _, pretrain_s = timed(pretrained.train, **{**PRETRAIN, **epochs})
    survival = gexbert_sc.GexBERTSurvival.from_gexbert_model(
        pretrained, time_key="time", event_key="event", seed=seed
    )
    _, survival_s = timed(survival.train, **{**SURVIVAL_TRAIN, **epochs})
    logging.info(
        "%s fold %d.%d: pretraining %.0f s, survival %.0f s",
        name,
        repeat,
        fold,
        pretrain_s,
        survival_s,
    )

    truth = (test.obs["time"].to_numpy(), test.obs["event"].to_numpy().astype(bool))
    rows = []

    def score(method: str, size, risk: np.ndarray, seconds: float, n_features: int) -> None:
        rows.append(
            {
                "cohort": name,
                "repeat": repeat,
                "fold": fold,
                "panel_size": size,
                "method": method,
                "c_index": concordance_index(truth[0], risk, truth[1]),
                "n_features": n_features,
                "seconds": seconds,
                "pretrain_seconds": pretrain_s,
                "survival_seconds": survival_s,
            }
        )

    n_components = min(200, len(train_rows) - 1)
    scaler = StandardScaler().fit(x_train)
    pca = PCA(n_components, random_state=0).fit(scaler.transform(x_train))
    pcs_train, pcs_test = (pca.transform(scaler.transform(x)) for x in (x_train, x_test))
    risk, seconds = timed(cox_risk, pcs_train, pcs_test, train)
    score("Cox (PCA-200, all genes)", ALL, risk, seconds, n_components)

    sizes = FAST["panel_sizes"] if fast else PANEL_SIZES
    for size in sizes:
        panel = draw_panel(adata.n_vars, size, seed)
        views = panel_view(x_train, panel, train), panel_view(x_test, panel, test)
        (restored_train, restored_test), restore_s = timed(
            lambda v=views: [restored_values(pretrained, view, anchor_names) for view in v]
        )
        features = {
            PANEL: (x_train[:, panel], x_test[:, panel]),
            RESTORED: (
                with_anchors(x_train[:, panel], panel, anchors, restored_train),
                with_anchors(x_test[:, panel], panel, anchors, restored_test),
            ),
            TRUE: (
                with_anchors(x_train[:, panel], panel, anchors, x_train),
                with_anchors(x_test[:, panel], panel, anchors, x_test),
            ),
            "Cox (GexBERT embedding)": tuple(
                pretrained.get_latent_representation(view) for view in views
            ),
        }
        for method, (f_train, f_test) in features.items():
            risk, seconds = timed(cox_risk, f_train, f_test, train)
            extra = restore_s if method == RESTORED else 0.0
            score(method, size, risk, seconds + extra, f_train.shape[1])
        risk, seconds = timed(lambda v=views[1]: survival.predict_risk(v).to_numpy())
        score("GexBERTSurvival", size, risk, seconds, len(panel))
    return rows


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """C-index mean ± sd per cohort, panel size and method; restored − panel with Wilcoxon p."""
    grouped = table.groupby(["cohort", "panel_size", "method"], sort=False)["c_index"]
    summary = grouped.agg(["mean", "std", "size"]).reset_index()
    summary.columns = ["cohort", "panel_size", "method", "c_index_mean", "c_index_std", "n_folds"]
    keys = ["cohort", "repeat", "fold", "panel_size"]
    wide = table.pivot_table(index=keys, columns="method", values="c_index").reset_index()
    diffs = []
    if RESTORED in wide:
        panels = wide.dropna(subset=[RESTORED])
        for (cohort, size), part in panels.groupby(["cohort", "panel_size"], sort=False):
            delta = (part[RESTORED] - part[PANEL]).to_numpy()
            ceiling = (part[TRUE] - part[PANEL]).to_numpy()
            nonzero = np.any(delta != 0)
            pvalue = wilcoxon(delta).pvalue if nonzero and len(delta) > 1 else np.nan
            diffs.append(
                {
                    "cohort": cohort,
                    "panel_size": size,
                    "restored_minus_panel": delta.mean(),
                    "restored_minus_panel_sd": delta.std(ddof=1) if len(delta) > 1 else np.nan,
                    "wilcoxon_p": pvalue,
                    "true_minus_panel": ceiling.mean(),
                }
            )
    return summary, pd.DataFrame(diffs)


def plot(summary: pd.DataFrame, path) -> None:
    """C-index (mean ± sd over folds) against panel size, one panel per cohort."""
    cohorts = list(dict.fromkeys(summary["cohort"]))
    fig, axes = plt.subplots(1, len(cohorts), figsize=(4.5 * len(cohorts), 4), squeeze=False)
    for ax, name in zip(axes[0], cohorts, strict=True):
        part = summary[(summary["cohort"] == name) & (summary["panel_size"] != ALL)]
        plot_methods(ax, part, "panel_size", "c_index", dashed=(PANEL, RESTORED, TRUE))
        reference = summary[(summary["cohort"] == name) & (summary["panel_size"] == ALL)]
        for _, row in reference.iterrows():
            ax.axhline(row["c_index_mean"], color="grey", linestyle=":", label=row["method"])
        ax.axhline(0.5, color="black", linewidth=0.5)
        ax.set_ylabel("test C-index")
        ax.set_title(f"{name} ({int(part['n_folds'].max())} folds)")
    finish_figure(fig, axes[0, -1], path, fontsize=6)


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], "2 folds, 2 epochs, 2 panel sizes")
    parser.add_argument("--cohorts", nargs="+", choices=COHORTS, default=list(COHORTS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--folds",
        type=int,
        nargs="+",
        help="run only these folds (0-based over repeats x 5 folds), e.g. to resume a run",
    )
    add_summarise_option(parser)
    args = parser.parse_args()
    if args.summarise:
        report(read_parts(args.summarise, ("panel_size",)), args)
        return
    quiet_training_logs()
    logging.getLogger("gexbert_sc").setLevel(logging.WARNING)
    rows = []
    for name in args.cohorts:
        adata = gexbert_sc.datasets.survset(name)
        event = adata.obs["event"].to_numpy()
        splitter = RepeatedStratifiedKFold(n_splits=N_FOLDS, n_repeats=args.repeats, random_state=0)
        for index, (train_rows, test_rows) in enumerate(splitter.split(event, event)):
            if args.fast and index >= FAST["folds"]:
                break
            if args.folds is not None and index not in args.folds:
                continue
            split = (index // N_FOLDS, index % N_FOLDS, train_rows, test_rows)
            rows += run_fold(name, adata, split, args.fast)
            # written after every fold, so that a stopped run keeps what it measured
            pd.DataFrame(rows).to_csv(results_path("survival.csv", args), index=False)
            print(f"{name}: fold {index + 1} done", flush=True)
    report(pd.DataFrame(rows), args)


def report(table: pd.DataFrame, args) -> None:
    """Write the fold table, the summary, the restoration test and the plot; print them."""
    table.to_csv(results_path("survival.csv", args), index=False)
    summary, differences = summarise(table)
    summary.to_csv(results_path("survival_summary.csv", args), index=False)
    differences.to_csv(results_path("survival_restoration.csv", args), index=False)
    plot(summary, results_path("survival.png", args))
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(differences.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
