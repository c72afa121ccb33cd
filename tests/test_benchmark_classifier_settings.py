"""The classifier settings sweep (``benchmarks/classifier_settings.py``): its fast mode."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import benchmark_script


@pytest.fixture(scope="module")
def sweep():
    """The benchmark script as a module."""
    with benchmark_script("classifier_settings") as module:
        yield module


def test_tuning_samples_come_from_the_scoreboards_training_samples(sweep):
    """The settings are compared on samples the scoreboard trains on, never on its test split."""
    train, tuning = sweep.tuning_split("pbmc68k", fast=True)
    adata = sweep.load("pbmc68k", fast=True)
    scoreboard_train, scoreboard_test = sweep.split_samples(adata.n_obs, 0)
    test_names = set(adata.obs_names[scoreboard_test])
    assert not test_names & set(tuning.obs_names)
    assert not test_names & set(train.obs_names)
    assert not set(train.obs_names) & set(tuning.obs_names)
    assert train.n_obs + tuning.n_obs == len(scoreboard_train)


def test_fast_run_scores_every_setting_and_summarises_by_group(sweep):
    table = pd.DataFrame(sweep.run("pbmc68k", fast=True))
    names = [sweep.setting_name(s) for s in sweep.SETTINGS]
    assert list(pd.unique(table["setting"])) == names
    assert table["accuracy"].between(0, 1).all()
    assert set(table["reading"]) == set(sweep.READINGS)
    # whole profiles are read once, by predict() at its defaults
    assert set(table.loc[table["case"] == sweep.ALL, "reading"]) == {"default"}
    held_out = table.assign(dataset="zeisel_shallow", held_out=True, accuracy=0.5)
    summary = sweep.summarise(pd.concat([table, held_out], ignore_index=True))
    chosen = summary[(summary["group"] == "chosen on") & (summary["reading"] == "default")]
    panels = table[(table["case"] != sweep.ALL) & (table["reading"] == "default")]
    expected = panels.groupby("setting")["accuracy"].mean()
    got = chosen[chosen["case"] == "panels"].set_index("setting")["accuracy"]
    np.testing.assert_allclose(got[expected.index], expected)
    assert (summary.loc[summary["group"] == "held out", "accuracy"] == 0.5).all()
    lines = sweep.markdown(summary).splitlines()
    assert len(lines) == 2 + 2 * len(names)  # header, rule, each setting per group
    assert lines[2].startswith(f"| chosen on | `{names[0]}` |")
