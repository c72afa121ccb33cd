"""get_gene_importance: faithful attributions on a set where one gene decides each class."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch
from helpers import TINY_MODEL, TINY_TRAIN, assert_fp32_path_close, make_decisive_adata

from gexbert_sc import GexBERT, GexBERTClassifier, metrics, pl, tl
from gexbert_sc.model.base._importance_targets import ClassProbability
from gexbert_sc.module._attribution import Minibatch, integrated_gradients
from gexbert_sc.module._presence import encode_with_presence

CLASSIFIER_TRAIN = {**TINY_TRAIN, "max_epochs": 15, "lr": 5e-3}
DECISIVE = {"c0": "gene_0", "c1": "gene_1", "c2": "gene_2"}


def _classifier(**architecture) -> GexBERTClassifier:
    adata = make_decisive_adata()
    GexBERT.setup_anndata(adata, labels_key="cls")
    pretrained = GexBERT(adata, **TINY_MODEL, **architecture, seed=0)
    pretrained.train(**{**TINY_TRAIN, "max_epochs": 3})
    classifier = GexBERTClassifier.from_gexbert_model(pretrained, seed=0)
    classifier.train(**CLASSIFIER_TRAIN)
    return classifier


@pytest.fixture(scope="module")
def classifier():
    """A classifier of the decisive set (shared, do not mutate; accuracy 1.0 when written)."""
    return _classifier()


def _top(table: pd.DataFrame) -> dict[str, str]:
    return dict(table[table["rank"] == 1].set_index("group")["gene"].astype(str))


def _top_sets(table: pd.DataFrame, n: int = 3) -> list[set[str]]:
    top = table[table["rank"] <= n].groupby("group", observed=True)["gene"]
    return [set(genes.astype(str)) for _, genes in top]


@pytest.mark.parametrize("method", ["integrated_gradients", "deletion"])
@pytest.mark.parametrize("versus_rest", [False, True])
def test_the_deciding_gene_tops_each_class(classifier, method, versus_rest):
    table = classifier.get_gene_importance(groupby="cls", method=method, versus_rest=versus_rest)
    assert _top(table) == DECISIVE
    assert list(table.columns[:4]) == ["group", "gene", "score", "rank"]
    assert (
        table.groupby("group", observed=True)["rank"]
        .apply(sorted)
        .map(list)
        .eq([list(range(1, 31))] * 3)
        .all()
    )
    assert table.attrs["method"] == method and table.attrs["target"] == "class_log_odds"


def test_gradient_attention_finds_them_when_cls_reads_only_by_attention():
    """Without the profile summary, ``[CLS]`` learns about a sample only through attention.

    Each class's own gene is high in it and the two others low: the three deciding genes
    are its top three (measured: in every class).
    """
    model = _classifier(cls_summary=False)
    table = model.get_gene_importance(groupby="cls", method="gradient_attention")
    assert _top_sets(table) == [set(DECISIVE.values())] * 3


def test_raw_attention_reads_no_target(classifier):
    with pytest.raises(ValueError, match="reads no target"):
        classifier.get_gene_importance(groupby="cls", method="attention", target="predicted")
    table = classifier.get_gene_importance(groupby="cls", method="attention")
    assert table.attrs["target"] is None and "context_fraction" in table


def test_presence_one_reads_as_the_model_and_zero_as_nothing_measured(classifier):
    module = classifier.module.eval()
    x = torch.as_tensor(classifier.adata.X[:8])
    with torch.no_grad():
        gated = encode_with_presence(module, x, None, torch.ones_like(x))["z"]
        plain = module.inference(x, encoding={})["z"]
        assert_fp32_path_close(gated.numpy(), plain.numpy())
        empty = encode_with_presence(module, x, None, torch.zeros_like(x))["z"]
        missing = module.inference(torch.full_like(x, torch.nan), encoding={})["z"]
    assert_fp32_path_close(empty.numpy(), missing.numpy())


def test_integrated_gradients_are_complete(classifier):
    """Attributions sum to the score of the sample minus the score of nothing read."""
    module = classifier.module.eval()
    x = torch.as_tensor(classifier.adata.X[:6])
    target = ClassProbability()

    def score(out, *info):
        return target.score(module, out, *info)

    with torch.no_grad():
        info = target.info(module, encode_with_presence(module, x, None, torch.ones_like(x)), None)
        full = score(encode_with_presence(module, x, None, torch.ones_like(x)), *info)
        nothing = score(encode_with_presence(module, x, None, torch.zeros_like(x)), *info)
    attributions, delta = integrated_gradients(
        module, Minibatch(x, None, None), score, info, n_steps=128
    )
    difference = (full - nothing).numpy()
    np.testing.assert_allclose(attributions.sum(1).numpy(), difference, rtol=0.05, atol=0.05)
    np.testing.assert_allclose(delta.numpy(), attributions.sum(1).numpy() - difference, atol=1e-3)


def test_deletion_is_the_drop_of_a_real_deletion(classifier):
    """The score of gene_1 in c1: the mean drop of log-odds when gene_1 is NaN."""
    table = classifier.get_gene_importance(groupby="cls", method="deletion", max_samples=None)
    rows = np.flatnonzero(classifier.adata.obs["cls"].to_numpy() == "c1")
    proba = classifier.predict(indices=rows, soft=True, panel_adapted=False).to_numpy()
    query = classifier.adata[rows].copy()
    query.X[:, 1] = np.nan
    dropped = classifier.predict(query, soft=True, panel_adapted=False).to_numpy()
    chosen = (np.arange(len(rows)), proba.argmax(1))
    log_odds = [np.log(p[chosen] / (1 - p[chosen])) for p in (proba, dropped)]
    expected = float(np.mean(log_odds[0] - log_odds[1]))
    got = table[(table["group"] == "c1") & (table["gene"] == "gene_1")]["score"].item()
    assert got == pytest.approx(expected, rel=1e-3, abs=1e-4)


@pytest.mark.parametrize("target", ["label", "c2"])
def test_label_and_class_targets(classifier, target):
    table = classifier.get_gene_importance(
        groupby="cls", method="integrated_gradients", target=target, n_steps=4
    )
    top = _top(table)
    if target == "label":
        assert top == DECISIVE
    else:  # the probability of c2 everywhere: its own gene first in its group
        assert top["c2"] == "gene_2"


def test_pretrained_model_targets(classifier):
    adata = make_decisive_adata(n_obs=60)
    GexBERT.setup_anndata(adata)
    model = GexBERT(adata, **TINY_MODEL, seed=0)
    model.train(**{**TINY_TRAIN, "max_epochs": 1})
    for target in ("embedding", "restoration"):
        table = model.get_gene_importance(
            groupby=None, method="integrated_gradients", target=target, n_steps=4
        )
        assert table["group"].unique().tolist() == ["all"]
        assert np.isfinite(table["score"]).all() and table["score"].abs().sum() > 0
        assert table.attrs["target"] == target
    with pytest.raises(ValueError, match="`target` of a GexBERT must be one of"):
        model.get_gene_importance(target="predicted")


def test_bad_arguments_are_refused_and_leave_adata_unchanged(classifier):
    adata = classifier.adata.copy()
    before = adata.copy()
    cases = [
        ({"method": "saliency"}, ValueError, "`method` must be one of"),
        ({"target": "c9"}, ValueError, "`target` of a GexBERTClassifier must be one of"),
        ({"max_samples": 0}, ValueError, "max_samples"),
        ({"n_steps": 1.5}, ValueError, "n_steps"),
        ({"versus_rest": True, "groupby": None}, ValueError, "at least two groups"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            classifier.get_gene_importance(adata, **{"groupby": "cls", **kwargs})
    adata.obs["cls"] = adata.obs["cls"].cat.rename_categories({"c0": "other"})
    edited = adata.copy()
    with pytest.raises(ValueError, match="not classes of the model"):
        classifier.get_gene_importance(adata, "cls", target="label")
    assert adata.obs.equals(edited.obs) and adata.uns.keys() == edited.uns.keys()
    np.testing.assert_array_equal(adata.X, before.X)


def test_rank_genes_importance_is_read_by_scanpy(classifier):
    adata = classifier.adata.copy()
    tl.rank_genes_importance(adata, classifier, "cls", method="deletion")
    uns = adata.uns["rank_genes_gexbert"]
    assert uns["params"]["method"] == "gexbert_deletion" and uns["params"]["groupby"] == "cls"
    frame = sc.get.rank_genes_groups_df(adata, "c1", key="rank_genes_gexbert")
    assert frame["names"].iloc[0] == "gene_1"
    assert frame["logfoldchanges"].isna().all() and frame["pvals"].isna().all()
    sc.pl.rank_genes_groups_dotplot(adata, key="rank_genes_gexbert", n_genes=2, show=False)
    assert adata.uns["gexbert"]["outputs"]["rank_genes_gexbert"]["params"]["importance"] == (
        "deletion"
    )


def test_rank_genes_attention_is_the_attention_case(classifier):
    adata = classifier.adata.copy()
    tl.rank_genes_attention(adata, classifier, "cls")
    tl.rank_genes_importance(adata, classifier, "cls", method="attention", max_samples=None)
    for field in ("names", "scores", "logfoldchanges"):
        old, new = adata.uns["rank_genes_attention"][field], adata.uns["rank_genes_gexbert"][field]
        for group in ("c0", "c1", "c2"):
            np.testing.assert_array_equal(old[group], new[group])


@pytest.fixture(scope="module")
def ranked(classifier):
    """The classifier's data with a true ranking (deciding genes first) and Wilcoxon's."""
    adata = classifier.adata.copy()
    sc.tl.rank_genes_groups(adata, "cls", method="wilcoxon", key_added="wilcoxon")
    names = {}
    for group, gene in DECISIVE.items():
        others = [g for g in adata.var_names if g not in DECISIVE.values()]
        names[group] = [gene, *[g for g in DECISIVE.values() if g != gene], *others]
    adata.uns["truth"] = {
        "params": {"groupby": "cls", "method": "truth"},
        "names": np.rec.fromarrays([np.array(v) for v in names.values()], names=list(names)),
    }
    return adata


def test_the_true_ranking_beats_random_orders(classifier, ranked):
    test = metrics.deletion_curve(
        classifier, ranked, ["truth", "wilcoxon"], "cls", n_genes=10, ks=(3, 10), n_random=4
    )
    truth = test.summary[test.summary["ranking"] == "truth"]
    assert (truth["deletion_auc"] < truth["random_deletion_auc"]).all()
    assert (truth["deletion_margin_sd"] > 3).all()
    assert (truth["comprehensiveness_3"] > 0.3).all()
    assert (truth["insertion_auc"] > truth["random_insertion_auc"]).all()
    assert set(test.curves["ranking"]) == {"truth", "wilcoxon", "random"}
    assert set(test.curves["mode"]) == {"deletion", "insertion"}
    full = test.curves[(test.curves["n_genes"] == 0) & (test.curves["mode"] == "deletion")]
    np.testing.assert_allclose(full["score"], np.repeat(truth["full"].to_numpy(), 6), rtol=1e-6)


def test_deletion_curve_plot(classifier, ranked, tmp_path):
    test = metrics.deletion_curve(classifier, ranked, "truth", "cls", n_genes=5, ks=(5,))
    path = tmp_path / "curve.png"
    ax = pl.deletion_curve(test, "c1", save=path)
    assert path.stat().st_size > 0
    assert [line.get_label() for line in ax.get_lines()] == ["truth"]
    ax = pl.deletion_curve(test, "c1", mode="insertion", show=False)
    assert ax.get_title() == "c1: insertion"
    with pytest.raises(ValueError, match="is not in the test"):
        pl.deletion_curve(test, "c9", show=False)
    with pytest.raises(ValueError, match="are not in the test"):
        pl.deletion_curve(test, "c1", rankings=["wilcoxon"], show=False)


def test_deletion_curve_refusals(classifier, ranked):
    cases = [
        ({"ks": (20,), "n_genes": 10}, ValueError, "at most `n_genes=10`"),
        ({"n_genes": 31, "ks": (5,)}, ValueError, "fewer than `n_genes=31`"),
        ({"groups": ["c9"]}, KeyError, "does not rank the groups"),
        ({"n_random": 0}, ValueError, "n_random"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            metrics.deletion_curve(classifier, ranked, "truth", "cls", **kwargs)
    with pytest.raises(KeyError, match="rank_genes"):
        metrics.deletion_curve(classifier, ranked, "absent", "cls")
