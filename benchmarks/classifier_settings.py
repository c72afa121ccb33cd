"""Benchmark: the classifier's defaults chosen on the scoreboard's data sets, never on a test split.

For each labelled data set of the scoreboard (``defaults.py``), the **training** samples of
its seed-0 split are split again (80/20, seed 1): GexBERT is pretrained at its defaults on
the inner training samples, then one ``GexBERTClassifier`` per setting is built on it
(``from_gexbert_model(model, **setting)`` + ``train()`` at its defaults) and scored on the
**tuning** samples (the inner 20 %), which neither model sees: accuracy and balanced accuracy
from random panels of 16 / 32 / 64 genes (three panels per size, the scoreboard's panels),
read by ``predict()`` at its defaults and by the trained head alone
(``panel_adapted=False``), and from all genes. The scoreboard's test samples are never read.

The default is the setting with the highest mean accuracy over panels and over the data sets
the defaults are chosen on (pbmc68k, zeisel, tcga_mirna); ``zeisel_shallow`` is held out of
the choice and reported beside it.

Writes ``benchmarks/results/classifier_settings.csv`` (one row per data set, setting, case,
panel and reading), ``classifier_settings_summary.csv`` and ``classifier_settings_summary.md``
(mean accuracy per setting over the chosen data sets and on the held-out one; what
docs/classification.md shows).

Rerun: ``GEXBERT_CPU_BF16=0 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python
benchmarks/classifier_settings.py`` (``--datasets``, ``--fast`` for a smoke run, ``--tag``;
``--summarise A.csv B.csv --tag T`` joins parts of a run, e.g. one data set per process).
"""

from __future__ import annotations

import argparse

import anndata as ad
import numpy as np
import pandas as pd
from _common import (
    ALL,
    add_summarise_option,
    benchmark_parser,
    draw_panel,
    only_panel,
    quiet_training_logs,
    read_parts,
    results_path,
    split_samples,
    timed,
)
from defaults import DATASETS, FAST, PANEL_SIZES, PANELS_PER_SIZE, load
from sklearn.metrics import balanced_accuracy_score

import gexbert_sc

#: The settings compared (arguments of ``from_gexbert_model``); the first is the 0.2 default.
SETTINGS = (
    {"encoder_lr_scale": 0.1},
    {"encoder_lr_scale": 0.3},
    {"encoder_lr_scale": 1.0},
    {"freeze_encoder": True},
)
#: Seed of the inner split of the scoreboard's training samples into training and tuning.
TUNING_SPLIT_SEED = 1
READINGS = {"default": {}, "trained head only": {"panel_adapted": False}}


def setting_name(setting: dict) -> str:
    """A setting as the keyword arguments that give it."""
    return ", ".join(f"{key}={value}" for key, value in setting.items())


def tuning_split(name: str, fast: bool) -> tuple[ad.AnnData, ad.AnnData]:
    """The inner training and tuning samples of the scoreboard's seed-0 training samples."""
    adata = load(name, fast)
    scoreboard_train, _ = split_samples(adata.n_obs, 0)
    inner_train, tuning = split_samples(len(scoreboard_train), TUNING_SPLIT_SEED)
    return (
        adata[scoreboard_train[inner_train]].copy(),
        adata[scoreboard_train[tuning]].copy(),
    )


def panel_queries(
    train: ad.AnnData, tuning: ad.AnnData, sizes
) -> list[tuple[str, int, ad.AnnData]]:
    """``(case, panel, query)``: the tuning samples read through each random panel, and whole."""
    queries = [(ALL, 0, tuning)]
    for size in (s for s in sizes if s < train.n_vars):
        for p in range(PANELS_PER_SIZE):
            panel = draw_panel(train.n_vars, size, p)
            queries.append(
                (str(size), p, ad.AnnData(only_panel(tuning.X, panel), var=tuning.var[[]]))
            )
    return queries


def run(name: str, fast: bool) -> list[dict]:
    """Every setting's classifier on one data set, scored on its tuning samples."""
    spec = DATASETS[name]
    train, tuning = tuning_split(name, fast)
    max_epochs = {"max_epochs": FAST["max_epochs"]} if fast else {}
    gexbert_sc.GexBERT.setup_anndata(train, labels_key=spec.label_key)
    model = gexbert_sc.GexBERT(train)
    _, pretrain_seconds = timed(model.train, **max_epochs)
    print(f"{name}: {train.shape} pretrained in {pretrain_seconds:.0f} s", flush=True)
    y_tuning = tuning.obs[spec.label_key].to_numpy()
    queries = panel_queries(train, tuning, FAST["panel_sizes"] if fast else PANEL_SIZES)
    rows = []
    for setting in SETTINGS:
        classifier = gexbert_sc.GexBERTClassifier.from_gexbert_model(
            model, labels_key=spec.label_key, **setting
        )
        _, seconds = timed(classifier.train, **max_epochs)
        base = {
            "dataset": name,
            "held_out": spec.held_out,
            "setting": setting_name(setting),
            "epochs": len(classifier.history["train_loss"]),
            "train_seconds": seconds,
        }
        print(f"  {base['setting']}: {base['epochs']} epochs in {seconds:.0f} s", flush=True)
        for case, panel, query in queries:
            for reading, kwargs in READINGS.items():
                if case == ALL and reading != "default":
                    continue
                predicted = classifier.predict(query, **kwargs).to_numpy()
                rows.append(
                    {
                        **base,
                        "case": case,
                        "panel": panel,
                        "reading": reading,
                        "accuracy": float(np.mean(predicted == y_tuning)),
                        "balanced_accuracy": balanced_accuracy_score(y_tuning, predicted),
                    }
                )
    return rows


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy per setting, reading and case, over the chosen data sets and held out.

    ``panels`` is the mean over the 16–64-gene cases; ``group`` says whether the row is the
    mean over the data sets the default is chosen on or the held-out data set.
    """
    table = table.assign(group=np.where(table["held_out"], "held out", "chosen on"))
    per_dataset = _mean_by(table, ["group", "dataset", "setting", "reading", "case"])
    panels = _mean_by(
        per_dataset[per_dataset["case"] != ALL], ["group", "dataset", "setting", "reading"]
    ).assign(case="panels")
    both = pd.concat([per_dataset, panels], ignore_index=True)
    return _mean_by(both, ["group", "setting", "reading", "case"])


def _mean_by(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean accuracies and training seconds per ``keys`` (in order of appearance)."""
    metrics = ["accuracy", "balanced_accuracy", "train_seconds"]
    return table.groupby(keys, sort=False)[metrics].mean().reset_index()


def markdown(summary: pd.DataFrame) -> str:
    """Accuracy per setting (rows) and case (columns), ``predict()`` at its defaults."""
    default = summary[summary["reading"] == "default"]
    wide = default.pivot_table(
        index=["group", "setting"], columns="case", values="accuracy", sort=False
    )
    seconds = default.groupby(["group", "setting"], sort=False)["train_seconds"].first()
    cases = [c for c in wide.columns if c not in (ALL, "panels")] + ["panels", ALL]
    lines = [
        "| data sets | setting | " + " | ".join(cases) + " | training (s) |",
        "|---" * (len(cases) + 3) + "|",
    ]
    for (group, setting), values in wide.iterrows():
        cells = " | ".join(f"{values[c]:.3f}" for c in cases)
        lines.append(f"| {group} | `{setting}` | {cells} | {seconds[(group, setting)]:.0f} |")
    return "\n".join(lines) + "\n"


def report(table: pd.DataFrame, args: argparse.Namespace) -> None:
    """Write the table, the summary and its Markdown; print the summary."""
    table.to_csv(results_path("classifier_settings.csv", args), index=False)
    summary = summarise(table)
    summary_path = results_path("classifier_settings_summary.csv", args)
    summary.to_csv(summary_path, index=False)
    summary_path.with_suffix(".md").write_text(markdown(summary))
    print(summary.to_string(index=False, float_format="%.3f"))


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], "200 samples, 120 genes, 1 epoch")
    labelled = [name for name, spec in DATASETS.items() if spec.label_key is not None]
    parser.add_argument("--datasets", nargs="+", choices=labelled, default=labelled)
    add_summarise_option(parser)
    args = parser.parse_args()
    if args.summarise:
        report(read_parts(args.summarise, ("case", "setting")), args)
        return
    quiet_training_logs()
    report(pd.DataFrame([r for name in args.datasets for r in run(name, args.fast)]), args)


if __name__ == "__main__":
    main()
