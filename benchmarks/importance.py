"""Gene importance of a fine-tuned classifier against differential expression, by the deletion test.

Design (one run per data set, seed 0; every sample is used for training and ranking: the
rankings describe what the trained classifier reads, there is no held-out split):

- Data. ``pbmc68k`` (700 cells, 765 genes, log-normalised as shipped; groups ``bulk_labels``,
  10 types), ``zeisel`` (3,005 cells, counts on the 1,000 genes of highest log-normalised
  variance; ``cell_type``, 7 types; its genes are anonymised, so it has no marker table) and
  ``tcga_mirna`` (2,578 tumours, 239 miRNAs, log-normalised; ``cancer_type``, 4 types; no
  marker table either). The baselines read log-normalised values.
- Model. GexBERT at the benchmarks' small width (``SMALL_MODEL``), pretrained, then a
  :class:`~gexbert_sc.GexBERTClassifier` fine-tuned on the groups (epochs and encoder rate of
  ``panel_classification.py``), batch size 128.
- Rankings per group, every gene ranked. GexBERT, on the classifier (target: each sample's
  predicted class): ``attention``, ``rollout``, ``gradient_attention``,
  ``integrated_gradients`` (16 steps), ``deletion`` (25 samples per group), each
  group-contrasted (:func:`gexbert_sc.tl.rank_genes_importance`: the group's mean attribution
  minus the rest's) and as the group's mean alone (``..._group``; the same attributions).
  Baselines: ``wilcoxon``, ``t-test`` and ``logreg`` (``sc.tl.rank_genes_groups``; logreg
  ranks by the coefficient of a multinomial logistic regression) and ``mean``
  (:func:`gexbert_sc.tl.rank_genes_mean`).
- Deletion test (:func:`gexbert_sc.metrics.deletion_curve`): per group, up to 100 samples;
  the classifier's probability of each sample's predicted class as the top 1-50 genes are
  read as missing (deletion) or read alone (insertion), against 5 random orders of the genes;
  comprehensiveness and sufficiency at 10, 20, 50 genes. ``importance_deletion.csv``.
- Markers (pbmc68k): the rank of each known marker in its group (MS4A1, CD79A, CD79B for B
  cells; LYZ, S100A8, S100A9, CST3, CD14 for monocytes; NKG7, GNLY, GZMB for NK cells; CD3E
  for the five T-cell groups). ``importance_markers.csv``.
- Overlap with Wilcoxon's top 50 per group (:func:`gexbert_sc.metrics.ranking_overlap`).
- Cost: seconds of each ranking (one thread, beside the other runs). ``importance_cost.csv``.
  ``--cost`` times each GexBERT method alone on zeisel's 3,005 cells with every cell read
  (``max_samples=None``; deletion on 10 cells per type, scaled) at 2 threads, on a model
  trained for 1 epoch (the cost does not depend on training): ``importance_timing.csv``.
- The ``[CLS]`` shortcut (pbmc68k only, ``--shortcut``): a second model pretrained with
  ``cls_summary=False`` (``[CLS]`` without the profile summary) and fine-tuned alike; its
  attention rankings' deletion test, and the pretrained embedding's kNN label accuracy and the
  restoration RMSE of 20 % hidden entries, beside the default model's.
  ``importance_shortcut.csv``.
- Goal table (``importance_summary.md``): per data set and ranking, the share of groups whose
  deletion AUC is below Wilcoxon's and logistic regression's and more than 3 random-order sds
  below random; marker groups with a marker in the top 20.

Rerun: ``cd benchmarks && GEXBERT_CPU_BF16=0 OMP_NUM_THREADS=1 python importance.py`` (all
data sets; ``--datasets pbmc68k --shortcut`` to select; ``--tag a`` names a part, ``--summarise
results/importance_deletion_a.csv ...`` merges parts; ``--fast``: 1 epoch on 300 cells).
Results go to ``benchmarks/results/importance_*``; the numbers are discussed in
``docs/interpretability.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
from _common import (
    SMALL_MODEL,
    add_summarise_option,
    benchmark_parser,
    dense,
    log_normalise,
    log_normalised,
    markdown_table,
    quiet_training_logs,
    read_parts,
    results_path,
    timed,
)

import gexbert_sc
from gexbert_sc import metrics, tl
from gexbert_sc.data._rankings import GEXBERT_METHOD_PREFIX, rankings_uns
from gexbert_sc.tl._importance import ranking_columns

logger = logging.getLogger("importance")

BATCH_SIZE = 128
TRAIN = {"batch_size": BATCH_SIZE, "enable_progress_bar": False}
GEXBERT_METHODS = ("attention", "rollout", "gradient_attention", "integrated_gradients", "deletion")
#: Samples per group each GexBERT method reads (deletion: one forward pass per gene and sample).
METHOD_SAMPLES = {"deletion": 25}
BASELINES = ("wilcoxon", "t-test", "logreg")
N_TOP, N_MARKER_TOP, N_DELETED, KS = 50, 20, 50, (10, 20, 50)
T_GROUPS = (
    "CD4+/CD25 T Reg",
    "CD8+ Cytotoxic T",
    "CD8+/CD45RA+ Naive Cytotoxic",
    "CD4+/CD45RO+ Memory",
    "CD4+/CD45RA+/CD25- Naive T",
)
PBMC_MARKERS = {
    "CD19+ B": ("MS4A1", "CD79A", "CD79B"),
    "CD14+ Monocyte": ("LYZ", "S100A8", "S100A9", "CST3", "CD14"),
    "CD56+ NK": ("NKG7", "GNLY", "GZMB"),
    **dict.fromkeys(T_GROUPS, ("CD3E",)),
}


@dataclass(frozen=True)
class Dataset:
    """A data set: loader, groups, training lengths, classifier settings, markers."""

    load: Callable[[], ad.AnnData]
    groupby: str
    pretrain_epochs: int
    classifier_epochs: int
    classifier_kwargs: dict = field(default_factory=dict)
    markers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: whether the model reads counts (the baselines read log-normalised values)
    counts: bool = False


def zeisel_top_genes(n_genes: int = 1000) -> ad.AnnData:
    """zeisel's counts on its ``n_genes`` genes of highest log-normalised variance."""
    adata = gexbert_sc.datasets.zeisel()
    logged = adata.copy()
    log_normalise(logged)
    variance = dense(logged).var(0)
    return adata[:, np.sort(np.argsort(variance)[::-1][:n_genes])].copy()


DATASETS = {
    "pbmc68k": Dataset(
        gexbert_sc.datasets.pbmc68k, "bulk_labels", 30, 30, {"encoder_lr_scale": 0.1}, PBMC_MARKERS
    ),
    "zeisel": Dataset(
        zeisel_top_genes, "cell_type", 10, 10, {"encoder_lr_scale": 1.0}, counts=True
    ),
    "tcga_mirna": Dataset(
        log_normalised(gexbert_sc.datasets.tcga_mirna),
        "cancer_type",
        20,
        20,
        {"encoder_lr_scale": 0.1},
    ),
}


def load(name: str, fast: bool) -> ad.AnnData:
    """The data set with a ``log`` layer for the baselines (a random 300 cells when fast)."""
    spec = DATASETS[name]
    adata = spec.load()
    if fast:
        rows = np.random.default_rng(0).choice(adata.n_obs, min(300, adata.n_obs), replace=False)
        adata = adata[np.sort(rows)].copy()
    logged = adata.copy()
    if spec.counts:
        log_normalise(logged)
    adata.layers["log"] = dense(logged)
    adata.obs[spec.groupby] = adata.obs[spec.groupby].astype("category")
    return adata


def train_classifier(
    adata: ad.AnnData, spec: Dataset, fast: bool, **architecture
) -> tuple[gexbert_sc.GexBERT, gexbert_sc.GexBERTClassifier, float]:
    """Pretrain GexBERT, fine-tune a classifier of the groups; seconds of both."""
    gexbert_sc.GexBERT.setup_anndata(adata, labels_key=spec.groupby)
    pretrained = gexbert_sc.GexBERT(adata, **SMALL_MODEL, **architecture, seed=0)
    _, pretrain_s = timed(pretrained.train, 1 if fast else spec.pretrain_epochs, **TRAIN)
    classifier = gexbert_sc.GexBERTClassifier.from_gexbert_model(
        pretrained, seed=0, **spec.classifier_kwargs
    )
    _, classifier_s = timed(classifier.train, 1 if fast else spec.classifier_epochs, **TRAIN)
    return pretrained, classifier, pretrain_s + classifier_s


def rank_gexbert(
    adata: ad.AnnData, model, groupby: str, methods=GEXBERT_METHODS, prefix: str = ""
) -> dict[str, float]:
    """Write each method's contrasted and group-only rankings into ``uns``; seconds each."""
    seconds = {}
    for method in methods:
        table, seconds[prefix + method] = timed(
            model.get_gene_importance,
            adata,
            groupby,
            method=method,
            versus_rest=True,
            max_samples=METHOD_SAMPLES.get(method, 500),
            batch_size=32 if method == "rollout" else BATCH_SIZE,
        )
        table = ranking_columns(table, method)
        group_only = table.assign(score=table["group_score"])
        group_only["rank"] = group_only.groupby("group", observed=True)["score"].rank(
            ascending=False, method="first"
        )
        for key, part in ((method, table), (f"{method}_group", group_only)):
            adata.uns[prefix + key] = rankings_uns(
                part, groupby, GEXBERT_METHOD_PREFIX + method, {}
            )
    return seconds


def rank_baselines(adata: ad.AnnData, groupby: str) -> dict[str, float]:
    """Wilcoxon, t-test, logistic regression and mean rankings on the log values; seconds."""
    seconds = {}
    for method in BASELINES:
        _, seconds[method] = timed(
            sc.tl.rank_genes_groups,
            adata,
            groupby,
            method=method,
            layer="log",
            use_raw=False,
            n_genes=adata.n_vars,
            key_added=method,
            **({"max_iter": 1000} if method == "logreg" else {}),
        )
    _, seconds["mean"] = timed(tl.rank_genes_mean, adata, groupby, layer="log", key_added="mean")
    return seconds


def marker_ranks(adata: ad.AnnData, markers: dict, rankings: list[str]) -> pd.DataFrame:
    """Rank (1 = top) of each known marker in its group under each ranking; NaN if absent."""
    rows = []
    for group, genes in markers.items():
        for ranking in rankings:
            names = list(adata.uns[ranking]["names"][group])
            for gene in genes:
                rank = names.index(gene) + 1 if gene in names else np.nan
                rows.append({"group": group, "gene": gene, "ranking": ranking, "rank": rank})
    return pd.DataFrame(rows, columns=["group", "gene", "ranking", "rank"])


def shortcut_rows(adata: ad.AnnData, spec: Dataset, fast: bool, models: dict) -> list[dict]:
    """Embedding, restoration and attention deletion margin with and without the shortcut."""
    hidden, mask = metrics.mask_entries(dense(adata), 0.2, seed=0)
    rows = []
    for label, (pretrained, classifier) in models.items():
        query = ad.AnnData(hidden, obs=adata.obs[[]], var=adata.var[[]])
        restored = pretrained.get_imputed_expression(query, return_numpy=True)
        scale = np.log1p if spec.counts else np.asarray
        labels = adata.obs[spec.groupby].to_numpy()
        keys = [f"{label}:attention", f"{label}:attention_group"]
        test = metrics.deletion_curve(
            classifier, adata, keys, spec.groupby, n_genes=N_DELETED, ks=KS, seed=0
        )
        rows.append(
            {
                "model": label,
                "knn_label_accuracy": metrics.knn_label_accuracy(
                    pretrained.get_latent_representation(), labels
                ),
                "restoration_rmse": metrics.masked_rmse(scale(restored), scale(dense(adata)), mask),
                **{
                    f"{key.split(':')[1]}_margin_sd": float(
                        test.summary.loc[
                            test.summary["ranking"] == key, "deletion_margin_sd"
                        ].median()
                    )
                    for key in keys
                },
                "attention_accuracy": float(
                    (
                        classifier.predict(panel_adapted=False).astype(str) == labels.astype(str)
                    ).mean()
                ),
            }
        )
    return rows


def run(name: str, fast: bool, shortcut: bool) -> dict[str, pd.DataFrame]:
    """Train on one data set, rank every way, test; the tables of the data set."""
    spec = DATASETS[name]
    adata = load(name, fast)
    pretrained, classifier, train_s = train_classifier(adata, spec, fast)
    logger.info("%s: trained in %.0f s", name, train_s)
    seconds = rank_gexbert(adata, classifier, spec.groupby)
    seconds |= rank_baselines(adata, spec.groupby)
    rankings = [
        *(key for method in GEXBERT_METHODS for key in (method, f"{method}_group")),
        *BASELINES,
        "mean",
    ]
    test, test_s = timed(
        metrics.deletion_curve,
        classifier,
        adata,
        rankings,
        spec.groupby,
        n_genes=N_DELETED,
        ks=KS,
        seed=0,
        batch_size=BATCH_SIZE,
    )
    logger.info("%s: deletion test in %.0f s", name, test_s)
    overlap = pd.concat(
        [
            metrics.ranking_overlap(adata, key, "wilcoxon", n_genes=N_TOP).assign(ranking=key)
            for key in rankings
            if key != "wilcoxon"
        ],
        ignore_index=True,
    )
    cost = pd.DataFrame(
        [{"step": "train", "seconds": train_s, "n_samples": adata.n_obs}]
        + [
            {"step": key, "seconds": value, "n_samples": adata.n_obs}
            for key, value in seconds.items()
        ]
    )
    tables = {
        "deletion": test.summary,
        "curves": test.curves,
        "markers": marker_ranks(adata, spec.markers, rankings),
        "overlap": overlap,
        "cost": cost,
    }
    if shortcut:
        plain, plain_classifier, _ = train_classifier(adata.copy(), spec, fast, cls_summary=False)
        for label, model in (("default", classifier), ("no_summary", plain_classifier)):
            rank_gexbert(adata, model, spec.groupby, ("attention",), prefix=f"{label}:")
        models = {"default": (pretrained, classifier), "no_summary": (plain, plain_classifier)}
        tables["shortcut"] = pd.DataFrame(shortcut_rows(adata, spec, fast, models))
    return {key: table.assign(dataset=name) for key, table in tables.items()}


def goal_table(deletion: pd.DataFrame, markers: pd.DataFrame) -> pd.DataFrame:
    """Per data set and ranking: the issue's deletion goal and marker goal, as shares of groups."""
    rows = []
    for (dataset, ranking), part in deletion.groupby(["dataset", "ranking"]):
        groups = part.set_index("group")
        reference = deletion[deletion["dataset"] == dataset].set_index(["ranking", "group"])
        wilcoxon = reference.loc["wilcoxon", "deletion_auc"].reindex(groups.index)
        logreg = reference.loc["logreg", "deletion_auc"].reindex(groups.index)
        beats = (groups["deletion_auc"] < wilcoxon) & (groups["deletion_auc"] < logreg)
        far = groups["deletion_margin_sd"] > 3
        row = {
            "dataset": dataset,
            "ranking": ranking,
            "groups": len(groups),
            "below_wilcoxon_and_logreg": float(beats.mean()),
            "over_3_sd_below_random": float(far.mean()),
            "deletion_goal": float((beats & far).mean()),
            "median_margin_sd": float(groups["deletion_margin_sd"].median()),
            "mean_deletion_auc": float(groups["deletion_auc"].mean()),
            "mean_comprehensiveness_20": float(groups["comprehensiveness_20"].mean()),
            "mean_sufficiency_20": float(groups["sufficiency_20"].mean()),
        }
        found = markers[(markers["dataset"] == dataset) & (markers["ranking"] == ranking)]
        # a data set without a marker table has no rows here
        if len(found):
            per_group = found.groupby("group")["rank"].min() <= N_MARKER_TOP
            row["marker_in_top20"] = float(per_group.mean())
        rows.append(row)
    return pd.DataFrame(rows)


def plot(deletion: pd.DataFrame, curves: pd.DataFrame, path) -> None:
    """Deletion margins per ranking (left) and one group's deletion curves (right), per data set."""
    names = deletion["dataset"].unique()
    fig, axes = plt.subplots(len(names), 2, figsize=(12, 3.8 * len(names)), squeeze=False)
    for row, name in zip(axes, names, strict=True):
        part = deletion[deletion["dataset"] == name]
        order = part.groupby("ranking")["deletion_margin_sd"].median().sort_values().index
        row[0].boxplot(
            [part.loc[part["ranking"] == key, "deletion_margin_sd"] for key in order],
            vert=False,
            tick_labels=list(order),
        )
        row[0].axvline(3, color="grey", linestyle=":")
        row[0].set(title=f"{name}: deletion AUC below random (sd of random orders)", xlabel="sd")
        row[0].tick_params(axis="y", labelsize=7)
        shown = curves[(curves["dataset"] == name) & (curves["mode"] == "deletion")]
        group = shown["group"].iloc[0]
        shown = shown[shown["group"] == group]
        for key in (
            "integrated_gradients_group",
            "deletion_group",
            "gradient_attention_group",
            "attention",
            "wilcoxon",
            "logreg",
        ):
            line = shown[shown["ranking"] == key]
            row[1].plot(line["n_genes"], line["score"], marker=".", label=key)
        random = shown[shown["ranking"] == "random"].groupby("n_genes")["score"]
        row[1].fill_between(
            random.mean().index, random.min(), random.max(), color="grey", alpha=0.3, label="random"
        )
        row[1].set(
            title=f"{name}: {group}",
            xlabel="top genes read as missing",
            ylabel="probability of the predicted class",
        )
        row[1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(tables: dict[str, pd.DataFrame], args) -> None:
    """Write the tables, the goal table and the figure; print the goal table."""
    goals = goal_table(tables["deletion"], tables["markers"])
    goals.to_csv(results_path("importance_goals.csv", args), index=False)
    text = "# Gene importance: deletion test (benchmarks/importance.py)\n\n" + markdown_table(goals)
    if "shortcut" in tables:
        text += "\n\n## [CLS] without the profile summary (pbmc68k)\n\n"
        text += markdown_table(tables["shortcut"])
    cost = tables["cost"].pivot(index="step", columns="dataset", values="seconds")
    text += "\n\n## Seconds per ranking (one thread)\n\n" + markdown_table(cost.reset_index(), 1)
    results_path("importance_summary.md", args).write_text(text + "\n")
    plot(tables["deletion"], tables["curves"], results_path("importance.png", args))
    pd.set_option("display.width", 220)
    print(goals.to_string(index=False))
    print(cost)


TABLES = ("deletion", "curves", "markers", "overlap", "cost", "shortcut")
#: Threads of the ``--cost`` timing (the goal's "2 cores").
COST_THREADS = 2
#: Samples per group of the timed deletion (its cost is linear in them).
COST_DELETION_SAMPLES = 10


def timing(fast: bool) -> pd.DataFrame:
    """Seconds of each GexBERT method on every cell of zeisel (deletion scaled from a subset)."""
    import torch

    torch.set_num_threads(COST_THREADS)
    spec = DATASETS["zeisel"]
    adata = load("zeisel", fast)
    _, classifier, _ = train_classifier(adata, spec, fast=True)  # 1 epoch: cost only
    rows = []
    for method in GEXBERT_METHODS:
        samples = COST_DELETION_SAMPLES if method == "deletion" else None
        _, seconds = timed(
            classifier.get_gene_importance,
            adata,
            spec.groupby,
            method=method,
            max_samples=samples,
            batch_size=32 if method == "rollout" else BATCH_SIZE,
        )
        read = adata.n_obs if samples is None else samples * adata.obs[spec.groupby].nunique()
        rows.append(
            {
                "method": method,
                "threads": COST_THREADS,
                "cells_read": read,
                "seconds": seconds,
                "seconds_for_3000_cells": seconds / read * 3000,
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    """Run the benchmark (or summarise saved parts)."""
    parser = benchmark_parser(__doc__.splitlines()[0], "1 epoch on 300 cells per data set")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--shortcut", action="store_true", help="also test cls_summary=False")
    parser.add_argument("--cost", action="store_true", help="only time each method (2 threads)")
    add_summarise_option(parser)
    args = parser.parse_args()
    if args.summarise:
        tables = {}
        for name in TABLES:
            paths = [p.replace("importance_deletion", f"importance_{name}") for p in args.summarise]
            present = [p for p in paths if Path(p).exists()]
            if present:
                tables[name] = read_parts(present, ("group", "ranking"))
        report(tables, args)
        return
    quiet_training_logs()
    if args.cost:
        table = timing(args.fast)
        table.to_csv(results_path("importance_timing.csv", args), index=False)
        print(table.to_string(index=False))
        return
    parts = [run(name, args.fast, args.shortcut and name == "pbmc68k") for name in args.datasets]
    tables = {
        name: pd.concat([part[name] for part in parts if name in part], ignore_index=True)
        for name in TABLES
        if any(name in part for part in parts)
    }
    for name, table in tables.items():
        table.to_csv(results_path(f"importance_{name}.csv", args), index=False)
    report(tables, args)


if __name__ == "__main__":
    main()
