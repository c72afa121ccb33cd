"""The importance benchmark (``benchmarks/importance.py``): its goal table and marker ranks."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from helpers import benchmark_script


@pytest.fixture(scope="module")
def importance():
    with benchmark_script("importance") as module:
        yield module


def _deletion_rows(ranking: str, aucs: list[float], margins: list[float]) -> list[dict]:
    return [
        {
            "dataset": "d",
            "ranking": ranking,
            "group": f"g{i}",
            "deletion_auc": auc,
            "deletion_margin_sd": margin,
            "comprehensiveness_20": 0.1,
            "sufficiency_20": 0.2,
        }
        for i, (auc, margin) in enumerate(zip(aucs, margins, strict=True))
    ]


def test_goal_table_counts_groups_below_both_baselines_and_far_from_random(importance):
    deletion = pd.DataFrame(
        _deletion_rows("ours", [0.1, 0.5, 0.2], [5.0, 5.0, 2.0])
        + _deletion_rows("wilcoxon", [0.3, 0.3, 0.3], [1.0, 1.0, 1.0])
        + _deletion_rows("logreg", [0.4, 0.4, 0.1], [1.0, 1.0, 1.0])
    )
    markers = pd.DataFrame(
        {
            "dataset": "d",
            "ranking": "ours",
            "group": ["g0", "g0", "g1"],
            "gene": ["a", "b", "c"],
            "rank": [30, 5, 40],
        }
    )
    goals = importance.goal_table(deletion, markers).set_index("ranking")
    ours = goals.loc["ours"]
    # g0 beats both and is 5 sd from random; g1 loses to both; g2 loses to logreg
    assert ours["below_wilcoxon_and_logreg"] == pytest.approx(1 / 3)
    assert ours["over_3_sd_below_random"] == pytest.approx(2 / 3)
    assert ours["deletion_goal"] == pytest.approx(1 / 3)
    assert ours["marker_in_top20"] == pytest.approx(0.5)  # g0 has b at 5; g1 only c at 40
    assert np.isnan(goals.loc["wilcoxon"].get("marker_in_top20", np.nan))


def test_marker_ranks_read_each_group_of_a_ranking(importance):
    adata = ad.AnnData(np.zeros((2, 3)), var=pd.DataFrame(index=["a", "b", "c"]))
    adata.uns["r"] = {"names": np.rec.fromarrays([np.array(["c", "a", "b"])], names=["g"])}
    table = importance.marker_ranks(adata, {"g": ("a", "z")}, ["r"])
    assert table["rank"].iloc[0] == 2 and np.isnan(table["rank"].iloc[1])
