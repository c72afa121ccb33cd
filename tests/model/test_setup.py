import anndata as ad
import numpy as np
import pytest
from helpers import TINY_MODEL, make_counts_adata

import gexbert_sc
from gexbert_sc import GexBERT


def test_setup_registers_fields_and_view_setup_prints(counts_adata, capsys):
    GexBERT.setup_anndata(counts_adata, batch_key="batch", labels_key="cell_type")
    model = GexBERT(counts_adata, **TINY_MODEL)
    assert model.summary_stats.n_batch == 2
    assert model.summary_stats.n_vars == 40
    model.view_anndata_setup()
    assert "batch" in capsys.readouterr().out
    assert "input=counts" in model._model_summary_string


def test_log_input_is_detected(log_adata):
    GexBERT.setup_anndata(log_adata)
    model = GexBERT(log_adata, **TINY_MODEL)
    assert not bool(model.module.input_is_counts)


@pytest.mark.parametrize(
    ("mutate", "kwargs", "error", "match"),
    [
        pytest.param(lambda a: a[:0].copy(), {}, ValueError, r"empty \(0 samples", id="empty"),
        pytest.param(
            lambda a: a, {"layer": "nope"}, KeyError, "`layer='nope'` is not in", id="layer"
        ),
        pytest.param(
            lambda a: a,
            {"batch_key": "donor"},
            KeyError,
            "`batch_key='donor'` is not a column",
            id="batch_key",
        ),
        pytest.param(
            lambda a: a,
            {"labels_key": "kind"},
            KeyError,
            "`labels_key='kind'` is not a column",
            id="labels_key",
        ),
        pytest.param(
            lambda a: a,
            {"input_scale": "tpm"},
            ValueError,
            "`input_scale` must be one of",
            id="input_scale",
        ),
        pytest.param(
            lambda a: a,
            {"missing_layer": "nope"},
            KeyError,
            "`missing_layer='nope'` is not in",
            id="missing_layer",
        ),
    ],
)
def test_setup_refuses_bad_input(counts_adata, mutate, kwargs, error, match):
    adata = mutate(counts_adata)
    with pytest.raises(error, match=match):
        GexBERT.setup_anndata(adata, **kwargs)


def test_non_numeric_values_are_refused():
    adata = ad.AnnData(np.array([["a", "b"], ["c", "d"]], dtype=object))
    with pytest.raises(TypeError, match="must be numeric, got dtype object"):
        GexBERT.setup_anndata(adata)


def test_negative_counts_are_refused(counts_adata):
    counts_adata.X[0, 0] = -3
    with pytest.raises(ValueError, match="input_scale='counts'.*negative"):
        GexBERT.setup_anndata(counts_adata, input_scale="counts")


def test_non_boolean_missing_layer_is_refused(counts_adata):
    counts_adata.layers["m"] = np.zeros(counts_adata.shape)
    with pytest.raises(TypeError, match="`missing_layer='m'` must be boolean"):
        GexBERT.setup_anndata(counts_adata, missing_layer="m")


def test_nan_only_gene_is_refused_at_training(counts_adata):
    counts_adata.X[:, 3] = np.nan
    GexBERT.setup_anndata(counts_adata)
    with pytest.raises(ValueError, match="1 of 40 genes have no observed value.*gene_3"):
        GexBERT(counts_adata, **TINY_MODEL)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_model": 0}, "`d_model` must be a positive integer"),
        ({"d_model": 10, "n_heads": 4}, r"`d_model` \(10\) must be divisible by `n_heads` \(4\)"),
        ({"n_layers": 1.5}, "`n_layers` must be a positive integer, got 1.5"),
        ({"n_decoder_layers": 0}, "`n_decoder_layers` must be a positive integer, got 0"),
        ({"n_context": True}, "`n_context` must be a positive integer, got True"),
        ({"n_levels": 2}, "`n_levels` must be an integer of at least 3"),
        ({"mask_ratio": 1.0}, r"`mask_ratio` must be in \[0, 1\), got 1.0"),
        ({"withhold_range": (0.5, 0.2)}, r"`withhold_range` must be None or \(low, high\)"),
        ({"withhold_range": (0.1, 1.0)}, r"0 <= low <= high < 1 and high > 0, got \(0.1, 1.0\)"),
        ({"withhold_range": 0.5}, r"`withhold_range` must be None or .*got 0.5"),
        ({"withhold_range": (0.0, 0.0)}, r"high > 0, got \(0.0, 0.0\)"),
        ({"withhold_range": None}, "`mask_ratio` must be > 0 when `withhold_range` is None"),
        ({"profile_fit": "yes"}, "`profile_fit` must be True or False, got 'yes'"),
        ({"dropout": 1.5}, r"`dropout` must be in \[0, 1\), got 1.5"),
        ({"bottleneck_weight": -1}, "`bottleneck_weight` must be a finite number >= 0, got -1"),
        ({"bottleneck_weight": float("nan")}, "`bottleneck_weight` must be a finite number"),
        ({"seed": "1"}, "`seed` must be an integer or None, got '1'"),
    ],
)
def test_constructor_validates_arguments_before_any_computation(counts_adata, kwargs, match):
    # a gene without any observed value would fail the statistics fit: the argument check
    # must come first
    counts_adata.X[:, 3] = np.nan
    GexBERT.setup_anndata(counts_adata)
    with pytest.raises(ValueError, match=match):
        GexBERT(counts_adata, **{**TINY_MODEL, **kwargs})


def test_getters_require_training(counts_adata):
    GexBERT.setup_anndata(counts_adata)
    model = GexBERT(counts_adata, **TINY_MODEL)
    with pytest.raises(RuntimeError, match="not trained"):
        model.get_latent_representation()


def test_package_exports():
    assert gexbert_sc.GexBERT is GexBERT
    assert make_counts_adata().n_vars == 40
