"""The default-settings sections of benchmarks/throughput.py (``_speedup``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import BENCHMARKS, benchmark_script

import gexbert_sc.module._attention as attention


@pytest.fixture(scope="module")
def speedup():
    with benchmark_script("_speedup") as module:
        yield module


def _table(speedup) -> pd.DataFrame:
    rows = []
    for version, rate in ((speedup.CURRENT, 150.0), ("0.2 (80e7c90)", 100.0)):
        for repeat, noise in enumerate((1.0, 1.1)):
            for phase, mfu in (("train", 0.55), ("embed", 0.5)):
                rows.append({
                    "section": "defaults", "cpu_kind": "native", "version": version,
                    "precision": "bf16-mixed", "phase": phase, "repeat": repeat,
                    "samples_per_s": rate * noise, "mfu": mfu * rate / 150 * noise,
                    "lever_off": "",
                })  # fmt: skip
    for repeat, rate in enumerate((120.0, 110.0)):
        rows.append({"section": "levers", "cpu_kind": "native", "version": speedup.CURRENT,
                     "precision": "bf16-mixed", "phase": "train", "samples_per_s": rate,
                     "lever_off": "fused AdamW", "repeat": repeat})  # fmt: skip
    for version, seconds in ((speedup.CURRENT, 0.2), ("0.2 (80e7c90)", 0.3)):
        rows.append({"section": "profile", "cpu_kind": "native", "version": version,
                     "precision": "bf16-mixed", "phase": "profile", "category": "matmul",
                     "seconds_per_step": seconds})  # fmt: skip
    return pd.DataFrame(rows)


def test_summary_takes_medians_and_speedups_and_checks_the_goals(speedup):
    table = _table(speedup)
    summary = speedup.summarise(table)
    train = summary[summary.phase == "train"].iloc[0]
    assert train["samples_per_s"] == pytest.approx(157.5)  # median of 150 and 165
    assert train["speedup"] == pytest.approx(1.5)
    lines = speedup.goal_lines(summary)
    assert "native train bf16-mixed: speed-up 1.50x (goal 3x) -> FAIL" in lines
    assert any(line.startswith("native train bf16-mixed: MFU 58%") for line in lines)
    levers = speedup.lever_table(table)
    # all on 150 and 165, switched off 120 and 110 in the same repeats: gains 1.25 and 1.5
    assert levers.loc[0, "gain_of_lever"] == pytest.approx(1.375)
    profile = speedup.profile_table(table)
    assert profile.loc[0, "0.2 (80e7c90)"] == 0.3
    text = speedup.markdown(summary, levers, profile)
    assert "| native | train | bf16-mixed | 105 | 158 | 1.5 |" in text
    assert "fused AdamW" in text and "matmul" in text


def test_levers_are_switched_off_in_the_running_process(speedup, monkeypatch):
    for name in ("cpu_has_amx", "FFN_CHUNK_ELEMENTS"):
        monkeypatch.setattr(attention, name, getattr(attention, name))
    attention_cls = attention.MultiHeadAttention
    monkeypatch.setattr(attention_cls, "forward", attention_cls.forward)
    monkeypatch.setattr(torch.optim, "AdamW", torch.optim.AdamW)
    torch.manual_seed(0)
    layer = attention.MultiHeadAttention(8, 2)
    query, memory = torch.randn(2, 5, 8), torch.randn(2, 1, 8)
    shortcut = layer(query, memory)
    for lever in speedup.LEVERS:
        speedup.switch_off(lever)
    assert attention.cpu_has_amx() and attention.FFN_CHUNK_ELEMENTS == 2**62
    assert not torch.optim.AdamW([torch.nn.Parameter(torch.ones(1))]).defaults["fused"]
    np.testing.assert_allclose(layer(query, memory).detach(), shortcut.detach(), atol=1e-6)
    with pytest.raises(ValueError, match="unknown lever"):
        speedup.switch_off("warp drive")


def test_a_child_measures_an_earlier_version_on_the_avx2_cpu_kind(speedup, tmp_path):
    """One real measurement in a fresh process, importing 0.2 extracted from git."""
    repo = BENCHMARKS.parent
    if subprocess.run(["git", "-C", str(repo), "cat-file", "-e", speedup.BASELINE_REF]).returncode:
        pytest.skip("this checkout has no git history of 0.2")
    tree = speedup.version_tree(speedup.BASELINE_REF, repo)
    assert "bottleneck_flops" not in (tree / "gexbert_sc/module/_cost.py").read_text()
    params = {"task": "inference", "precision": "32-true", "fast": True, "seconds": 1.0}
    rows = speedup.run_child(Path(BENCHMARKS / "throughput.py"), params, tree, "avx2")
    assert [row["phase"] for row in rows] == ["embed", "restore"]
    for row in rows:
        speedup.add_flops(row)
        assert row["samples_per_s"] > 0 and 0 < row["mfu"] < 2
        assert row["n_vars"] == 300 and row["d_model"] == 128
