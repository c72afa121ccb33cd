"""Attention gene importance against Wilcoxon and mean-expression rankings, with an ablation.

Design (one run per data set, seed 0; every cell is used for pretraining: rankings describe
the data the model saw, there is no held-out split):

- Data. ``pbmc68k`` (700 cells, 765 genes, log-normalised values as shipped; groups
  ``bulk_labels``, 10 types; 30 epochs) and ``zeisel`` (3,005 cells, counts, the 1,000 genes
  of highest variance of the log-normalised values; groups ``cell_type``, 7 types; 10 epochs;
  its genes are anonymised, so it has no marker table). The model reads what the data set
  holds (counts for zeisel); the baselines read log-normalised values.
- Model. GexBERT at the benchmarks' small width (``SMALL_MODEL``: ``d_model=64``,
  ``n_context=128``, other arguments at their defaults), batch size 128.
- Rankings per group, every gene ranked. ``attention_last`` and ``attention_rollout``:
  :func:`gexbert_sc.tl.rank_genes_attention` (group-specific: a group's shrunk mean attention
  minus that of the other groups; see ``docs/interpretability.md``); ``wilcoxon``:
  ``sc.tl.rank_genes_groups(method="wilcoxon")``; ``mean``:
  :func:`gexbert_sc.tl.rank_genes_mean` (mean in the group minus mean in the rest).
- Tables. ``attention_markers.csv`` (pbmc68k): the rank (1 = top) of each known marker in its
  group under each ranking (MS4A1, CD79A, CD79B for B cells; LYZ, S100A8, S100A9, CST3, CD14
  for monocytes; NKG7, GNLY, GZMB for NK cells; CD3E in the five T-cell groups; a marker the
  data set lacks is reported as absent). ``attention_overlap.csv``: per group, the share of the
  top 50 that two rankings have in common (:func:`gexbert_sc.metrics.ranking_overlap`), with
  the chance level ``50 / n_genes``. ``attention_ablation.csv``: per group, the restoration
  RMSE of a random 20 % of the group's expressed genes when the ranking's top 20 genes are
  hidden against hiding 20 random expressed genes (5 draws;
  :func:`gexbert_sc.metrics.attention_ablation`), for every ranking: a ranking that finds the
  genes the model relies on hurts more than random, and the Wilcoxon row says how much a
  ranking that never looked at the model does.
- Figure ``attention.png``: the top-50 overlaps per group and the ablation effect
  (``rmse_top - rmse_random``, in units of ``rmse_random_sd``) per ranking.

Rerun: ``GEXBERT_CPU_BF16=0 python benchmarks/attention.py`` (both data sets; ``--datasets
pbmc68k`` to select; ``--fast``: 1 epoch on a few hundred cells, to check the script). Results
go to ``benchmarks/results/attention_*.csv`` and ``attention.png``; the numbers are discussed
in ``docs/interpretability.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
from _common import (
    SMALL_MODEL,
    benchmark_parser,
    dense,
    log_normalise,
    quiet_training_logs,
    results_path,
    timed,
)

import gexbert_sc
from gexbert_sc import metrics, tl

logger = logging.getLogger("attention")

N_TOP = 50
N_ABLATED = 20
BATCH_SIZE = 128
ATTENTION_METHODS = ("last", "rollout")
RANKINGS = ("attention_last", "attention_rollout", "wilcoxon", "mean")
#: Known markers of the pbmc68k groups (the issue's list); T-cell markers for every T group.
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
    """A data set of the benchmark: loader, grouping column, epochs and markers."""

    load: Callable[[], ad.AnnData]
    groupby: str
    max_epochs: int
    markers: dict[str, tuple[str, ...]]


def zeisel_top_genes(n_genes: int = 1000) -> ad.AnnData:
    """zeisel's counts on its ``n_genes`` genes of highest log-normalised variance."""
    adata = gexbert_sc.datasets.zeisel()
    logged = adata.copy()
    log_normalise(logged)
    variance = dense(logged).var(0)
    return adata[:, np.sort(np.argsort(variance)[::-1][:n_genes])].copy()


DATASETS = {
    "pbmc68k": Dataset(gexbert_sc.datasets.pbmc68k, "bulk_labels", 30, PBMC_MARKERS),
    "zeisel": Dataset(zeisel_top_genes, "cell_type", 10, {}),
}


def load(name: str, fast: bool) -> ad.AnnData:
    """The data set with a ``log`` layer for the baselines (a random 300 cells when fast)."""
    spec = DATASETS[name]
    adata = spec.load()
    if fast:
        rows = np.random.default_rng(0).choice(adata.n_obs, min(300, adata.n_obs), replace=False)
        adata = adata[np.sort(rows)].copy()
    logged = adata.copy()
    if name == "zeisel":
        log_normalise(logged)
    adata.layers["log"] = logged.X
    adata.obs[spec.groupby] = adata.obs[spec.groupby].astype("category")
    return adata


def rank_all(adata: ad.AnnData, model: gexbert_sc.GexBERT, groupby: str) -> dict[str, float]:
    """Write the four rankings into ``adata.uns`` under their names; seconds each."""
    seconds = {}
    for method in ATTENTION_METHODS:
        _, seconds[f"attention_{method}"] = timed(
            tl.rank_genes_attention,
            adata,
            model,
            groupby,
            method=method,
            key_added=f"attention_{method}",
            batch_size=32 if method == "rollout" else BATCH_SIZE,
        )
    _, seconds["wilcoxon"] = timed(
        sc.tl.rank_genes_groups,
        adata,
        groupby,
        method="wilcoxon",
        layer="log",
        use_raw=False,
        n_genes=adata.n_vars,
        key_added="wilcoxon",
    )
    _, seconds["mean"] = timed(tl.rank_genes_mean, adata, groupby, layer="log", key_added="mean")
    return seconds


def marker_ranks(adata: ad.AnnData, markers: dict[str, tuple[str, ...]]) -> pd.DataFrame:
    """Rank (1 = top) of each marker in its group under each ranking; NaN if absent."""
    rows = []
    for group, genes in markers.items():
        for ranking in RANKINGS:
            names = list(adata.uns[ranking]["names"][group])
            for gene in genes:
                rank = names.index(gene) + 1 if gene in names else np.nan
                rows.append({"group": group, "gene": gene, "ranking": ranking, "rank": rank})
    return pd.DataFrame(rows)


def overlaps(adata: ad.AnnData) -> pd.DataFrame:
    """Top-50 overlaps: each attention ranking with Wilcoxon and mean, and mean with Wilcoxon."""
    pairs = [(f"attention_{m}", ref) for m in ATTENTION_METHODS for ref in ("wilcoxon", "mean")]
    tables = [
        metrics.ranking_overlap(adata, key, reference, n_genes=N_TOP).assign(
            ranking=key, reference=reference
        )
        for key, reference in [*pairs, ("mean", "wilcoxon")]
    ]
    return pd.concat(tables, ignore_index=True)


def ablations(model: gexbert_sc.GexBERT, adata: ad.AnnData, groupby: str) -> pd.DataFrame:
    """Hiding each ranking's top genes against hiding random expressed genes, per group."""
    tables = []
    for ranking in RANKINGS:
        table = metrics.attention_ablation(
            model, adata, groupby, key=ranking, n_genes=N_ABLATED, batch_size=BATCH_SIZE
        )
        table["effect_sd"] = (table["rmse_top"] - table["rmse_random"]) / table["rmse_random_sd"]
        tables.append(table.assign(ranking=ranking))
    return pd.concat(tables, ignore_index=True)


def plot(overlap: pd.DataFrame, ablation: pd.DataFrame, path) -> None:
    """Overlap fractions (left) and ablation effects (right) per data set and ranking."""
    names = overlap["dataset"].unique()
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 3.6 * len(names)), squeeze=False)
    for row, name in zip(axes, names, strict=True):
        part = overlap[overlap["dataset"] == name]
        pairs = part["ranking"] + " vs " + part["reference"]
        table = part.assign(pair=pairs).pivot(index="group", columns="pair", values="fraction")
        table.plot.bar(ax=row[0], width=0.8)
        row[0].axhline(part["chance"].iloc[0], color="grey", linestyle=":", label="chance")
        row[0].set(title=f"{name}: top-{N_TOP} overlap", ylabel="shared fraction", xlabel="")
        row[0].legend(fontsize=6)
        row[0].tick_params(axis="x", labelsize=6, rotation=75)
        effect = ablation[ablation["dataset"] == name]
        effect.pivot(index="group", columns="ranking", values="effect_sd").plot.bar(
            ax=row[1], width=0.8
        )
        row[1].axhline(0, color="grey", linewidth=0.8)
        row[1].set(
            title=f"{name}: hiding the top {N_ABLATED} vs {N_ABLATED} random genes",
            ylabel="(RMSE top − RMSE random) / sd random",
            xlabel="",
        )
        row[1].legend(fontsize=6)
        row[1].tick_params(axis="x", labelsize=6, rotation=75)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(name: str, fast: bool) -> tuple[pd.DataFrame, ...]:
    """Train on one data set, rank, and return its marker, overlap, ablation and cost tables."""
    spec = DATASETS[name]
    adata = load(name, fast)
    gexbert_sc.GexBERT.setup_anndata(adata)
    model = gexbert_sc.GexBERT(adata, **SMALL_MODEL, seed=0)
    epochs = 1 if fast else spec.max_epochs
    _, train_seconds = timed(model.train, epochs, batch_size=BATCH_SIZE, enable_progress_bar=False)
    logger.info("%s: trained %d epochs in %.0f s", name, epochs, train_seconds)
    seconds = rank_all(adata, model, spec.groupby)
    markers = marker_ranks(adata, spec.markers).assign(dataset=name)
    overlap = overlaps(adata).assign(dataset=name)
    ablation = ablations(model, adata, spec.groupby).assign(dataset=name)
    cost = pd.DataFrame(
        [{"dataset": name, "step": "train", "epochs": epochs, "seconds": train_seconds}]
        + [{"dataset": name, "step": key, "seconds": value} for key, value in seconds.items()]
    )
    return markers, overlap, ablation, cost


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], "1 epoch on 300 cells per data set")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    args = parser.parse_args()
    quiet_training_logs()
    tables = [run(name, args.fast) for name in args.datasets]
    columns = zip(*tables, strict=True)
    markers, overlap, ablation, cost = (pd.concat(parts, ignore_index=True) for parts in columns)
    for table, name in ((markers, "markers"), (overlap, "overlap"), (ablation, "ablation")):
        table.to_csv(results_path(f"attention_{name}.csv", args), index=False)
    cost.to_csv(results_path("attention_cost.csv", args), index=False)
    plot(overlap, ablation, results_path("attention.png", args))
    pd.set_option("display.width", 200)
    if len(markers):
        print(markers.pivot_table(index=["group", "gene"], columns="ranking", values="rank"))
    print(overlap.groupby(["dataset", "ranking", "reference"])[["fraction", "chance"]].mean())
    summary = ablation.groupby(["dataset", "ranking"]).agg(
        groups=("group", "size"),
        top_hurts_more=("top_hurts_more", "sum"),
        mean_effect_sd=("effect_sd", "mean"),
    )
    print(summary)
    print(cost)


if __name__ == "__main__":
    main()
