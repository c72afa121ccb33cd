"""Tests for Li et al. 2022's per-gene spatial metrics and their accuracy score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats as st

from gexbert_sc.metrics import accuracy_score, spatial_gene_scores


def _li_reference(raw: np.ndarray, impute: np.ndarray) -> dict[str, float]:
    """One gene scored column by column the way Li's CalculateMeteics does, with scipy."""
    raw_max, imp_max = raw / raw.max(), impute / impute.max()
    mu1, mu2 = raw_max.mean(), imp_max.mean()
    s1, s2 = raw_max.std(), imp_max.std()
    s12 = ((raw_max - mu1) * (imp_max - mu2)).mean()
    c1, c2 = 0.01**2, 0.03**2
    ssim = (
        (2 * mu1 * mu2 + c1)
        / (mu1**2 + mu2**2 + c1)
        * (2 * s1 * s2 + c2)
        / (s1**2 + s2**2 + c2)
        * (s12 + c2 / 2)
        / (s1 * s2 + c2 / 2)
    )
    p, q = raw / raw.sum(), impute / impute.sum()
    m = (p + q) / 2
    return {
        "PCC": st.pearsonr(raw, impute)[0],
        "SSIM": ssim,
        "RMSE": np.sqrt(((st.zscore(raw) - st.zscore(impute)) ** 2).mean()),
        "JS": 0.5 * st.entropy(p, m) + 0.5 * st.entropy(q, m),
    }


def test_scores_equal_lis_definitions():
    rng = np.random.default_rng(0)
    truth = rng.gamma(1.5, size=(300, 4)) + 0.01
    predicted = 0.5 * truth + rng.gamma(1.0, size=truth.shape) + 0.01
    scores = spatial_gene_scores(truth, predicted, genes=list("abcd"))
    assert list(scores.index) == list("abcd")
    for j, gene in enumerate("abcd"):
        expected = _li_reference(truth[:, j], predicted[:, j])
        for metric, value in expected.items():
            assert scores.loc[gene, metric] == pytest.approx(value, rel=1e-9, abs=1e-12)


def test_perfect_and_bad_predictions_are_told_apart():
    rng = np.random.default_rng(1)
    truth = rng.gamma(2.0, size=(400, 2))
    perfect = spatial_gene_scores(truth, truth)
    np.testing.assert_allclose(perfect[["PCC", "SSIM"]], 1.0)
    np.testing.assert_allclose(perfect[["RMSE", "JS"]], 0.0, atol=1e-12)
    shuffled = spatial_gene_scores(truth, rng.permutation(truth))
    assert (shuffled["PCC"].abs() < 0.2).all() and (shuffled["RMSE"] > 1.2).all()
    assert (shuffled["JS"] > perfect["JS"]).all()


def test_constant_prediction_has_zero_correlation():
    truth = np.arange(20, dtype=float).reshape(10, 2)
    scores = spatial_gene_scores(truth, np.ones_like(truth))
    assert (scores["PCC"] == 0).all() and np.isfinite(scores.to_numpy()).all()


@pytest.mark.parametrize(
    ("measured", "predicted", "genes", "match"),
    [
        (np.ones((5, 2)), np.ones((5, 3)), None, "one shape"),
        (np.ones(5), np.ones(5), None, "2-D"),
        (np.array([[1.0, np.nan]]), np.ones((1, 2)), None, "`measured` holds NaN"),
        (np.ones((5, 2)), np.ones((5, 2)), ["a"], "names 1 genes"),
    ],
)
def test_bad_input_is_refused(measured, predicted, genes, match):
    with pytest.raises(ValueError, match=match):
        spatial_gene_scores(measured, predicted, genes=genes)


def test_accuracy_score_ranks_methods():
    summary = pd.DataFrame(
        {
            "PCC": [0.6, 0.5, 0.4],
            "SSIM": [0.4, 0.3, 0.2],
            "RMSE": [0.8, 0.9, 1.0],
            "JS": [0.1, 0.2, 0.3],
        },
        index=["best", "middle", "worst"],
    )
    scores = accuracy_score(summary)
    assert scores["best"] == pytest.approx(1.0)
    assert scores["worst"] == pytest.approx(1 / 3)
    assert scores["best"] > scores["middle"] > scores["worst"]
    with pytest.raises(KeyError, match="lacks the metric columns"):
        accuracy_score(summary.drop(columns="JS"))
