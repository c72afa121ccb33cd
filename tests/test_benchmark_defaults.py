"""The defaults scoreboard (``benchmarks/defaults.py``): its fast mode on real data, its goals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import benchmark_script


@pytest.fixture(scope="module")
def scoreboard():
    """The benchmark script as a module (its folder's helpers importable beside it)."""
    with benchmark_script("defaults") as module:
        yield module


def _row(dataset: str, use: str, case: str, method: str, value: float) -> dict:
    return {
        "dataset": dataset,
        "held_out": False,
        "seed": 0,
        "use": use,
        "case": case,
        "method": method,
        "value": value,
        "seconds": 1.0,
    }


def test_fast_run_scores_every_use_against_its_baselines(scoreboard):
    """One labelled single-cell set and one held-out bulk set, at the package defaults."""
    table = pd.DataFrame(
        scoreboard.run("pbmc68k", 0, fast=True) + scoreboard.run("gse3143", 0, fast=True)
    )
    summary = scoreboard.summarise(table)
    table_md = scoreboard.markdown(summary).splitlines()
    assert len(table_md) == 2 + len(summary)  # header, rule, one line per summary row
    assert any(line.startswith("| gse3143 (held out) | restoration | 50% |") for line in table_md)
    uses = summary.groupby("dataset")["use"].agg(set)
    assert uses["pbmc68k"] == {"restoration", "embedding", "panel", "pretraining"}
    assert uses["gse3143"] == {"restoration", "pretraining"}  # no labels: restoration only
    assert summary.loc[summary["dataset"] == "gse3143", "held_out"].all()
    scored = summary[summary["use"] != "pretraining"]
    np.testing.assert_allclose(scored["ratio"], scored["gexbert"] / scored["baseline"])
    restoration = table[table["use"] == "restoration"]
    assert {"KNNImputer", "SoftImpute", "per-gene mean"} <= set(restoration["method"])
    assert (restoration["value"] > 0).all()
    panel = table[(table["use"] == "panel") & (table["case"] != "train")]
    assert {"LR (panel)", "kNN (panel)", "GexBERT"} <= set(panel["method"])
    # each mechanism's own effect is measured in the same run: GexBERT without it
    assert "GexBERT (decoder only)" in set(restoration["method"])
    assert "GexBERT (trained head only)" in set(panel["method"])
    assert (
        summary.loc[summary["use"].isin(["restoration", "panel"]), "without_mechanism"]
        .notna()
        .all()
    )
    assert panel["value"].between(0, 1).all()
    assert panel["panel"].nunique() == scoreboard.PANELS_PER_SIZE


def test_summary_applies_each_use_goal(scoreboard):
    """50 % restoration needs 0.97 x the best imputer; other rates a tie; panels LR on the panel."""
    rows = [
        _row("a", "restoration", "50%", "GexBERT", 0.96),
        _row("a", "restoration", "50%", "KNNImputer", 1.0),
        _row("a", "restoration", "50%", "per-gene mean", 0.5),  # scale only, never the bar
        _row("a", "restoration", "50%", "GexBERT (decoder only)", 0.9),  # ours, not a bar
        _row("b", "restoration", "50%", "GexBERT", 0.98),
        _row("b", "restoration", "50%", "SoftImpute", 1.0),
        _row("a", "restoration", "10%", "GexBERT", 1.0),
        _row("a", "restoration", "10%", "KNNImputer", 1.0),
        _row("a", "panel", "16", "GexBERT", 0.80),
        _row("a", "panel", "16", "LR (panel)", 0.79),
        _row("a", "panel", "16", "kNN (panel)", 0.85),
        _row("a", "embedding", "complete", "GexBERT", 0.70),
        _row("a", "embedding", "complete", "PCA-50", 0.71),
        _row("zeisel_shallow", "pretraining", "train", "GexBERT", 18),
    ]
    table = pd.DataFrame(rows)
    table.loc[table["use"] == "pretraining", "seconds"] = 601.0
    summary = scoreboard.summarise(table).set_index(["dataset", "use", "case"])
    met = summary["goal_met"]
    assert met[("a", "restoration", "50%")]
    assert not met[("b", "restoration", "50%")]
    assert met[("a", "restoration", "10%")]
    assert met[("a", "panel", "16")]  # above LR on the panel, below kNN: the goal is LR
    assert summary.loc[("a", "panel", "16"), "best_baseline"] == "kNN (panel)"
    assert not met[("a", "embedding", "complete")]
    assert summary.loc[("a", "restoration", "50%"), "best_baseline"] == "KNNImputer"
    assert summary.loc[("a", "restoration", "50%"), "without_mechanism"] == 0.9
    assert summary.loc[("a", "restoration", "50%"), "goal_bar"] == pytest.approx(0.97)
    assert summary.loc[("a", "panel", "16"), "goal_bar"] == 0.79  # LR on the panel
    assert np.isnan(summary.loc[("a", "embedding", "complete"), "without_mechanism"])
    assert not met[("zeisel_shallow", "pretraining", "seconds")]
