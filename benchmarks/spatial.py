"""Restoring the genes a spatial panel did not measure: GexBERT against Tangram, gimVI and kNN.

Two sections, every method on the same data, genes and folds in one run.

``data14`` (Li et al. 2022's protocol on their Data14, cross-technology): the BDTNP FISH
atlas of the Drosophila embryo (3,039 cells x 84 genes, ``datasets.drosophila_fish``) and its
scRNA-seq reference (1,297 cells x 8,924 genes, log-normalised, ``datasets.drosophila_scrna``).
The 84 panel genes are split into 10 folds (``KFold(10, shuffle=True, random_state=0)``, the
same folds for every method); in each fold the spatial data are read on the other genes and
the fold's genes are predicted at every cell. Per gene: PCC, SSIM, RMSE, JS as Li's code
computes them (``gexbert_sc.metrics.spatial_gene_scores``); per method: the median over the
84 genes, Li's accuracy score AS over the methods of the run
(``gexbert_sc.metrics.accuracy_score``; a ``--reference-genes`` variant is scored in place
of the default GexBERT, so that it changes no other method's AS) and the seconds per fold.

- GexBERT: trained **once** on the reference at the package defaults (``GexBERT(ref,
  seed=0)``, ``train()``: its default epochs and early stopping; every gene), then each
  fold is a panel: ``prepare_query_anndata(panel, model, match_scale="quantile")`` brings
  the FISH values to the reference's scale on the panel's genes, ``tl.impute(genes=fold)``
  restores the fold's genes. Its training time is a row of its own; its per-fold time is
  the reading only.
- kNN: the same quantile-matched panel; the mean of each cell's 10 nearest reference cells
  (Euclidean on the panel's genes).
- Tangram 1.0.4 (``tangram-sc``, the ``bench`` extra): cells mode at its defaults (1,000
  epochs, RNA-count density prior), refitted per fold on the panel's genes, CPU.
- gimVI (``scvi.external.GIMVI``): at its defaults (ZINB / NB, 200 epochs), refitted per
  fold on the reference and the panel's genes; values given as the data sets hold them.
  For compute, its reference holds the 84 panel genes and the 2,000 most variable genes
  (seurat flavour), not all 8,924: on every gene one fold did not finish within 20 minutes
  at one thread here (Li et al. ran it on every gene).

``merfish`` (within one technology): MERFISH of U-2 OS cells (``datasets.merfish_osteosarcoma``,
3 batches). The 2,000 most variable genes of batches 1 and 2 (seurat flavour on their
log-normalised counts); batches 1 and 2 hold every one of them (training), batch 3 is read
through a panel of 200 of them drawn at random (seed 0) and the other 1,800 are restored.
Values are scored in the model's log space ``log1p(1e4 x / s)``, the size factor ``s`` of a
batch-3 cell estimated from its panel genes with the training cells' gene shares (as in
``imputation.py``). GexBERT (package defaults, trained on the training batches' counts)
against ``KNNImputer`` (k=10) and SoftImpute, both fitted on the training cells and the
panel-only batch-3 cells together. Metrics on the restored entries: RMSE and the median
over genes of the per-gene Pearson r.

Outputs: ``results/spatial.csv`` (one row per method and gene), ``results/spatial_summary.csv``
and ``.md`` (the tables of the docs), ``results/spatial.png`` (per-gene PCC / r per method).

Rerun (about 1 h 30 min at one thread on 2 CPU cores)::

    cd benchmarks
    OMP_NUM_THREADS=1 python spatial.py                     # everything, one process
    # or in parts (two processes), then summarise them together:
    OMP_NUM_THREADS=1 python spatial.py --methods GexBERT kNN --tag own
    OMP_NUM_THREADS=1 python spatial.py --sections data14 --methods Tangram gimVI --tag peers
    python spatial.py --summarise results/spatial_own.csv results/spatial_peers.csv

A method rerun in a later part (listed later to ``--summarise``) replaces its earlier rows.
``--fast``: a smoke run (a tiny model, 2 folds, a small gene set, no gimVI).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
from _baselines import (
    gimvi_predict,
    knn_impute,
    reference_knn,
    soft_impute,
    tangram_available,
    tangram_predict,
)
from _common import (
    add_summarise_option,
    benchmark_parser,
    dense,
    markdown_table,
    quiet_training_logs,
    read_parts,
    results_path,
    timed,
)
from imputation import gexbert_fill, log_space
from sklearn.model_selection import KFold

import gexbert_sc
from gexbert_sc.data import align_genes
from gexbert_sc.metrics import (
    accuracy_score,
    gene_correlations,
    masked_rmse,
    median_gene_correlation,
    spatial_gene_scores,
)

SECTIONS = ("data14", "merfish")
DATA14_METHODS = ("GexBERT", "kNN", "Tangram", "gimVI")
MERFISH_METHODS = ("GexBERT", "KNNImputer", "SoftImpute")
N_FOLDS = 10
SEED = 0
GIMVI_REFERENCE_GENES = 2_000
MERFISH_GENES = 2_000
MERFISH_PANEL = 200
#: fast mode: a tiny model, 2 folds, the panel plus 300 reference genes, a 60-gene panel
FAST_MODEL = {"d_model": 32, "n_layers": 1, "n_heads": 2, "n_levels": 16, "n_context": 64}
FAST_TRAIN = {"max_epochs": 2, "batch_size": 64}
FAST_FOLDS = 2
FAST_REFERENCE_GENES = 300
FAST_MERFISH = {"genes": 300, "panel": 60}
#: Li et al. 2022's published medians on Data14 (PCC, SSIM): context for the docs only
LI_PUBLISHED = {
    "Tangram": (0.457, 0.278),
    "gimVI": (0.504, 0.310),
    "SpaGE": (0.568, 0.360),
    "Seurat": (0.545, 0.246),
}

Predictor = Callable[[ad.AnnData, ad.AnnData, list[str], list[str]], np.ndarray]


# ---------------------------------------------------------------------- protocol
def gene_folds(genes: list[str], n_folds: int = N_FOLDS) -> list[tuple[list[str], list[str]]]:
    """Li's folds: ``KFold(n_folds, shuffle=True, random_state=0)`` over the panel's genes."""
    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=SEED)
    return [
        ([genes[i] for i in train], [genes[i] for i in test])
        for train, test in splitter.split(genes)
    ]


def run_fold(
    methods: dict[str, Predictor],
    reference: ad.AnnData,
    spatial: ad.AnnData,
    train_genes: list[str],
    test_genes: list[str],
    fold: int,
) -> list[dict]:
    """Score every method on one fold: one row per method and held-out gene.

    Each method sees the reference in full and the spatial data on ``train_genes`` only; its
    predictions of ``test_genes`` are scored against the measured values.
    """
    measured = dense(spatial[:, test_genes])
    rows = []
    for name, predict in methods.items():
        predicted, seconds = timed(
            predict, reference, spatial[:, train_genes], train_genes, test_genes
        )
        scores = spatial_gene_scores(measured, predicted, test_genes)
        for gene, values in scores.iterrows():
            rows.append(
                {
                    "section": "data14",
                    "method": name,
                    "fold": fold,
                    "gene": gene,
                    **values.to_dict(),
                    "fold_seconds": seconds,
                }
            )
    return rows


def quantile_matched(panel: ad.AnnData, reference: ad.AnnData) -> np.ndarray:
    """The panel's values on the reference's scale (``match_scale="quantile"``)."""
    matched = align_genes(panel, panel.var_names, match_scale="quantile", scale_reference=reference)
    return np.asarray(matched.X)


def knn_predictor(reference: ad.AnnData, panel: ad.AnnData, train_genes, test_genes):
    """:func:`_baselines.reference_knn` on the quantile-matched panel."""
    return reference_knn(
        dense(reference[:, train_genes]),
        quantile_matched(panel, reference),
        dense(reference[:, test_genes]),
    )


def gexbert_predictor(model: gexbert_sc.GexBERT) -> Predictor:
    """Read each fold's panel with the one trained model and restore the fold's genes."""

    def predict(reference, panel, train_genes, test_genes):
        query = gexbert_sc.GexBERT.prepare_query_anndata(panel, model, match_scale="quantile")
        gexbert_sc.tl.impute(query, model, genes=test_genes)
        return np.asarray(query[:, test_genes].layers["gexbert_imputed"])

    return predict


def build_gexbert(adata: ad.AnnData, fast: bool) -> gexbert_sc.GexBERT:
    """A GexBERT at the package defaults (a tiny one in fast mode), not yet trained."""
    gexbert_sc.GexBERT.setup_anndata(adata)
    return gexbert_sc.GexBERT(adata, seed=SEED, **(FAST_MODEL if fast else {}))


def train_gexbert(model: gexbert_sc.GexBERT, fast: bool) -> float:
    """Train ``model`` (default epochs and early stopping; a few in fast mode): seconds."""
    _, seconds = timed(model.train, enable_progress_bar=False, **(FAST_TRAIN if fast else {}))
    return seconds


def data14(methods: list[str], fast: bool, reference_genes: int | None = None) -> list[dict]:
    """Li's 10-fold protocol on Data14 for ``methods`` (see the module docstring).

    ``reference_genes``: train GexBERT on the panel's genes and this many variable genes of
    the reference instead of every gene (``--reference-genes``; its own method name).
    """
    spatial = gexbert_sc.datasets.drosophila_fish()
    reference = gexbert_sc.datasets.drosophila_scrna()
    genes = list(spatial.var_names)
    if fast:
        variable = reference.X.var(axis=0).argsort()[::-1][:FAST_REFERENCE_GENES]
        keep = reference.var_names.isin(genes) | np.isin(np.arange(reference.n_vars), variable)
        reference = reference[:, keep].copy()
    predictors: dict[str, Predictor] = {}
    rows = []
    if "GexBERT" in methods:
        name, trained_on = "GexBERT", reference
        if reference_genes is not None:
            name = f"GexBERT (panel + {reference_genes} variable genes)"
            trained_on = with_variable_genes(reference, genes, reference_genes)
        model = build_gexbert(trained_on.copy(), fast)
        seconds = train_gexbert(model, fast)
        predictors[name] = gexbert_predictor(model)
        rows.append(
            {
                "section": "data14",
                "method": name,
                "gene": "(training, once)",
                "fold_seconds": seconds,
            }
        )
    if "kNN" in methods:
        predictors["kNN"] = knn_predictor
    if "Tangram" in methods and tangram_available():
        predictors["Tangram"] = lambda r, p, a, b: tangram_predict(r, p, a, b, SEED)
    if "gimVI" in methods and not fast:
        smaller = with_variable_genes(reference, genes, GIMVI_REFERENCE_GENES)
        predictors["gimVI"] = lambda r, p, a, b: gimvi_predict(smaller, p, a, b, SEED)
    folds = gene_folds(genes)[: FAST_FOLDS if fast else None]
    for fold, (train_genes, test_genes) in enumerate(folds):
        rows += run_fold(predictors, reference, spatial, train_genes, test_genes, fold)
        print(f"data14 fold {fold + 1}/{len(folds)} done", flush=True)
    return rows


def with_variable_genes(reference: ad.AnnData, genes: list[str], n_top: int) -> ad.AnnData:
    """``reference`` on ``genes`` and its ``n_top`` most variable genes (seurat flavour)."""
    variable = sc.pp.highly_variable_genes(reference, n_top_genes=n_top, inplace=False)
    keep = variable["highly_variable"].to_numpy() | reference.var_names.isin(genes)
    return reference[:, keep].copy()


# ---------------------------------------------------------------------- MERFISH
def merfish_split(fast: bool) -> tuple[ad.AnnData, ad.AnnData, list[str]]:
    """Training batches (every gene), batch 3 (every gene, for the truth), the panel's genes."""
    adata = gexbert_sc.datasets.merfish_osteosarcoma()
    n_genes = FAST_MERFISH["genes"] if fast else MERFISH_GENES
    n_panel = FAST_MERFISH["panel"] if fast else MERFISH_PANEL
    is_training = adata.obs["batch"].isin(["1", "2"]).to_numpy()
    logged = adata[is_training].copy()
    sc.pp.normalize_total(logged, target_sum=1e4)
    sc.pp.log1p(logged)
    sc.pp.highly_variable_genes(logged, n_top_genes=n_genes)
    genes = logged.var_names[logged.var["highly_variable"]]
    adata = adata[:, genes]
    rng = np.random.default_rng(SEED)
    panel = sorted(rng.choice(np.asarray(genes), n_panel, replace=False).tolist())
    return adata[is_training].copy(), adata[~is_training].copy(), panel


def merfish(methods: list[str], fast: bool) -> list[dict]:
    """Batch 3 read through a random panel; the other genes restored (module docstring)."""
    training, query, panel = merfish_split(fast)
    counts = dense(query)
    masked = counts.copy()
    hidden = np.ones(counts.shape, dtype=bool)
    hidden[:, query.var_names.get_indexer(panel)] = False
    masked[hidden] = np.nan
    model = build_gexbert(training.copy(), fast)  # its gene shares give the log space
    share = model.module.gene_share.cpu()
    y_train, _ = log_space(dense(training), share, True)
    y_masked, factors = log_space(masked, share, True)
    truth = np.log1p(counts / factors[:, None] * 1e4)
    n_query = len(query)
    fills: dict[str, tuple[np.ndarray, float]] = {}
    rows = []
    if "GexBERT" in methods:
        seconds = train_gexbert(model, fast)
        rows.append(
            {
                "section": "merfish",
                "method": "GexBERT",
                "gene": "(training, once)",
                "fold_seconds": seconds,
            }
        )
        fills["GexBERT"] = timed(gexbert_fill, model, masked, factors, True)
    stacked = np.vstack([y_train, y_masked])
    if "KNNImputer" in methods:
        filled, s = timed(knn_impute, stacked)
        fills["KNNImputer"] = (filled[-n_query:], s)
    if "SoftImpute" in methods:
        filled, s = timed(soft_impute, stacked)
        fills["SoftImpute"] = (filled[-n_query:], s)
    for name, (filled, s) in fills.items():
        r = pd.Series(gene_correlations(filled, truth, hidden)).dropna()
        rows.append(
            {
                "section": "merfish",
                "method": name,
                "gene": "(all restored)",
                "RMSE": masked_rmse(filled, truth, hidden),
                "r": median_gene_correlation(filled, truth, hidden),
                "fold_seconds": s,
            }
        )
        rows += [
            {"section": "merfish", "method": name, "gene": g, "r": value} for g, value in r.items()
        ]
    return rows


# ---------------------------------------------------------------------- summary
def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """One row per section and method: medians over genes, AS (data14), seconds."""
    parts = []
    genes = table[~table["gene"].astype(str).str.startswith("(")]
    data14 = genes[genes["section"] == "data14"]
    if len(data14):
        summary = data14.groupby("method")[["PCC", "SSIM", "RMSE", "JS"]].median()
        summary["AS"] = variant_accuracy_scores(summary)
        summary["seconds_per_fold"] = (
            data14.groupby(["method", "fold"])["fold_seconds"].first().groupby("method").mean()
        )
        summary["genes"] = data14.groupby("method")["gene"].nunique()
        parts.append(summary.assign(section="data14"))
    overall = table[table["gene"] == "(all restored)"].set_index("method")
    if len(overall):
        merfish_summary = overall[["RMSE", "r"]].rename(columns={"r": "median_gene_r"})
        merfish_summary["seconds_per_fold"] = overall["fold_seconds"]
        parts.append(merfish_summary.assign(section="merfish"))
    training = table[table["gene"] == "(training, once)"]
    summary = pd.concat(parts).reset_index().rename(columns={"index": "method"})
    for (section, method), seconds in (
        training.groupby(["section", "method"])["fold_seconds"].first().items()
    ):
        where = (summary["section"] == section) & (summary["method"] == method)
        summary.loc[where, "training_seconds"] = seconds
    order = ["section", "method", *[c for c in summary.columns if c not in ("section", "method")]]
    return summary[order].sort_values(["section", "method"]).reset_index(drop=True)


def variant_accuracy_scores(summary: pd.DataFrame) -> pd.Series:
    """Li's AS among the protocol's methods; a variant's in place of the method it varies.

    A variant is named ``"<method> (<what differs>)"`` (``--reference-genes``): it is scored
    against the other methods with its base method left out, so that adding it changes
    no other method's AS.
    """
    is_variant = summary.index.str.contains(" (", regex=False)
    scores = accuracy_score(summary[~is_variant])
    for variant in summary.index[is_variant]:
        base = variant.split(" (")[0]
        others = summary[~is_variant & (summary.index != base)]
        scores[variant] = accuracy_score(pd.concat([others, summary.loc[[variant]]]))[variant]
    return scores.reindex(summary.index)


def plot(table: pd.DataFrame, path) -> None:
    """Per-gene PCC (data14) and per-gene r (merfish) of every method."""
    genes = table[~table["gene"].astype(str).str.startswith("(")]
    panels = [
        ("data14", "PCC", "Data14: per-gene PCC (84 genes, 10 folds)"),
        ("merfish", "r", "MERFISH batch 3: per-gene r of restored genes"),
    ]
    panels = [p for p in panels if (genes["section"] == p[0]).any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (section, metric, title) in zip(axes[0], panels, strict=True):
        part = genes[genes["section"] == section]
        methods = sorted(
            part["method"].unique(), key=lambda m: -part[part.method == m][metric].median()
        )
        values = [part[part["method"] == m][metric].dropna().to_numpy() for m in methods]
        ax.boxplot(values, showfliers=False)
        rng = np.random.default_rng(0)
        for i, v in enumerate(values, start=1):
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(v)), v, s=6, alpha=0.5)
        labels = [m.replace(" (", "\n(") for m in methods]
        ax.set_xticks(range(1, len(methods) + 1), labels, fontsize=7)
        ax.set_ylabel(metric)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def latest_parts(paths: list[str]) -> pd.DataFrame:
    """The parts of a run as one table; a method rerun in a later part replaces its rows.

    Rows are keyed by section and method: a part listed after another that holds the same
    method of the same section (a rerun, e.g. after a fix) wins.
    """
    table = pd.DataFrame()
    for path in paths:
        part = read_parts([path], text_columns=("gene",))
        keys = set(zip(part["section"], part["method"], strict=True))
        if len(table):
            earlier = pd.Series(list(zip(table["section"], table["method"], strict=True)))
            table = table[~earlier.isin(keys).to_numpy()]
        table = pd.concat([table, part], ignore_index=True)
    return table


def report(table: pd.DataFrame, args) -> None:
    """Write the CSVs, the markdown table and the figure; print the summary."""
    table.to_csv(results_path("spatial.csv", args), index=False)
    summary = summarise(table)
    summary.to_csv(results_path("spatial_summary.csv", args), index=False)
    results_path("spatial_summary.md", args).write_text(markdown_table(summary) + "\n")
    plot(table, results_path("spatial.png", args))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep=""))


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], "a tiny model, 2 folds, few genes")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[*DATA14_METHODS, *MERFISH_METHODS[1:]],
        choices=[*DATA14_METHODS, *MERFISH_METHODS[1:]],
    )
    parser.add_argument(
        "--reference-genes",
        type=int,
        default=None,
        help="data14: train GexBERT on the panel and this many variable reference genes",
    )
    add_summarise_option(parser)
    args = parser.parse_args()
    if args.summarise:
        report(latest_parts(args.summarise), args)
        return
    quiet_training_logs()
    start = time.perf_counter()
    rows = []
    if "data14" in args.sections:
        rows += data14(args.methods, args.fast, args.reference_genes)
    if "merfish" in args.sections and set(args.methods) & set(MERFISH_METHODS):
        rows += merfish(args.methods, args.fast)
    report(pd.DataFrame(rows), args)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
