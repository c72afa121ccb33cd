"""Task models take over what the pretrained model learned its inputs by: batch codes, scale."""

from __future__ import annotations

import numpy as np
import pytest
from anndata.tests.helpers import assert_equal
from helpers import TINY_MODEL, TINY_TRAIN, make_counts_adata

from gexbert_sc import GexBERT, GexBERTClassifier, GexBERTSurvival

TASKS = {
    "classifier": (GexBERTClassifier, {"labels_key": "cell_type"}),
    "survival": (GexBERTSurvival, {"time_key": "time", "event_key": "event"}),
}


def with_survival_columns(adata):
    rng = np.random.default_rng(0)
    adata.obs["time"] = rng.exponential(1.0, adata.n_obs)
    adata.obs["event"] = rng.integers(0, 2, adata.n_obs)
    return adata


@pytest.fixture(scope="module")
def pretrained():
    """Pretrained on batches "a" and "b", whose batch embeddings differ (shared)."""
    adata = with_survival_columns(make_counts_adata(n_obs=80, seed=5))
    GexBERT.setup_anndata(adata, batch_key="batch")
    model = GexBERT(adata, **TINY_MODEL)
    model.train(**TINY_TRAIN)
    return model


def task_data(pretrained, batches):
    adata = pretrained.adata[: len(batches)].copy()
    adata.obs["batch"] = list(batches)
    for key in [k for k in adata.obs if k.startswith("_scvi")]:
        del adata.obs[key]
    return adata


@pytest.mark.parametrize("task", TASKS)
def test_a_task_model_reads_batches_with_the_pretrained_codes(pretrained, task):
    """Data holding only batch "b": its code stays "b"'s (1), not the first code (0)."""
    cls, keys = TASKS[task]
    adata = task_data(pretrained, ["b"] * 30)
    model = cls.from_gexbert_model(pretrained, adata=adata, **keys)
    assert list(model._registered_categories("batch")) == ["a", "b"]
    assert model.summary_stats.n_batch == 2
    # the encoder reads the cells with the batch embedding of "b"
    read = next(model.minibatches(batch_size=30))
    np.testing.assert_array_equal(read["batch"].numpy().ravel(), np.ones(30))


@pytest.mark.parametrize("task", TASKS)
def test_a_batch_the_pretrained_model_never_saw_is_refused_by_name(pretrained, task):
    """As many batches as in pretraining, but other ones: refused, the AnnData unchanged."""
    cls, keys = TASKS[task]
    adata = task_data(pretrained, ["c", "d"] * 15)
    before = adata.copy()
    with pytest.raises(ValueError, match=r"batches the model was not trained on: \['c', 'd'\]"):
        cls.from_gexbert_model(pretrained, adata=adata, **keys)
    assert_equal(adata, before)


@pytest.mark.parametrize("task", TASKS)
def test_a_task_model_refuses_data_on_another_scale_than_the_pretrained_model(pretrained, task):
    """Log-normalised data for a model pretrained on counts."""
    cls, keys = TASKS[task]
    adata = task_data(pretrained, ["a", "b"] * 15)
    adata.X = np.log1p(adata.X)
    before = adata.copy()
    with pytest.raises(ValueError, match="trained on counts"):
        cls.from_gexbert_model(pretrained, adata=adata, **keys)
    assert_equal(adata, before)


def test_a_task_model_on_a_mudata_model_reads_its_layer():
    """Pretrained through setup_mudata on a layer: the task model reads that layer too."""
    import mudata

    rna = with_survival_columns(make_counts_adata(n_obs=60, seed=6))
    rna.layers["counts"] = rna.X.copy()
    rna.X = np.log1p(rna.X)  # X is not what the model reads
    mdata = mudata.MuData({"rna": rna})
    GexBERT.setup_mudata(mdata, rna_layer="counts", modalities={"rna_layer": "rna"})
    model = GexBERT(mdata, **TINY_MODEL)
    model.train(**TINY_TRAIN)
    classifier = GexBERTClassifier.from_gexbert_model(
        model, labels_key="cell_type", adata=rna.copy()
    )
    read = next(classifier.minibatches(batch_size=60))
    np.testing.assert_array_equal(read["X"].numpy(), rna.layers["counts"])
    with pytest.raises(ValueError, match="MuData"):
        GexBERTClassifier.from_gexbert_model(model, labels_key="cell_type")
