"""`input_scale="auto"` is resolved once at set-up, said, stored, and read at construction."""

from __future__ import annotations

import logging

import mudata
import numpy as np
import pytest
from anndata.tests.helpers import assert_equal
from helpers import TINY_MODEL

import gexbert_sc.data._input_scale as input_scale_module
import gexbert_sc.data._validation as validation_module
from gexbert_sc import GexBERT


def scale_records(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "input_scale" in r.getMessage()]


def test_auto_says_once_what_it_decided_and_why_and_stores_it(counts_adata, caplog):
    with caplog.at_level(logging.INFO, logger="gexbert_sc"):
        GexBERT.setup_anndata(counts_adata)
        model = GexBERT(counts_adata, **TINY_MODEL)
    (message,) = scale_records(caplog)
    assert "input_scale='auto' resolved to 'counts'" in message
    assert "every observed value is a non-negative integer" in message
    assert model.registry_["setup_args"]["input_scale"] == "counts"
    recorded = counts_adata.uns["gexbert"]["input_scale"]
    assert recorded["requested"] == "auto"
    assert recorded["resolved"] == "counts"
    assert "non-negative integer" in recorded["reason"]


def test_auto_on_log_values_names_the_value_that_decided(log_adata, caplog):
    with caplog.at_level(logging.INFO, logger="gexbert_sc"):
        GexBERT.setup_anndata(log_adata)
    (message,) = scale_records(caplog)
    assert "resolved to 'log'" in message and "not integers (e.g." in message
    assert log_adata.uns["gexbert"]["input_scale"]["resolved"] == "log"


def test_mudata_setup_resolves_and_stores_the_scale_too(counts_adata):
    mdata = mudata.MuData({"rna": counts_adata})
    GexBERT.setup_mudata(mdata, modalities={"rna_layer": "rna"})
    model = GexBERT(mdata, **TINY_MODEL)
    assert model.registry_["setup_args"]["input_scale"] == "counts"
    assert mdata.uns["gexbert"]["input_scale"]["resolved"] == "counts"


def test_the_values_are_scanned_once_for_setup_and_construction(counts_adata, monkeypatch):
    calls = []
    for module in (validation_module, input_scale_module):
        original = module.scan_values

        def counting(matrix, *args, original=original, **kwargs):
            calls.append(matrix.shape)
            return original(matrix, *args, **kwargs)

        monkeypatch.setattr(module, "scan_values", counting)
    GexBERT.setup_anndata(counts_adata)
    GexBERT(counts_adata, **TINY_MODEL)
    assert len(calls) == 1


@pytest.mark.parametrize("name", ["counts", "raw_counts", "UMI_counts"])
def test_a_layer_named_counts_whose_values_are_not_counts_is_refused(log_adata, name):
    log_adata.layers[name] = log_adata.X.copy()
    before = log_adata.copy()
    with pytest.raises(ValueError, match=rf"`layer='{name}'` is named as counts, but"):
        GexBERT.setup_anndata(log_adata, layer=name)
    assert_equal(log_adata, before)
    # said explicitly, the values are taken as log-scale
    GexBERT.setup_anndata(log_adata, layer=name, input_scale="log")


def test_a_layer_named_counts_holding_counts_is_accepted(counts_adata):
    counts_adata.layers["counts"] = counts_adata.X.copy()
    counts_adata.X = np.log1p(counts_adata.X)
    GexBERT.setup_anndata(counts_adata, layer="counts")
    assert GexBERT(counts_adata, **TINY_MODEL).registry_["setup_args"]["input_scale"] == "counts"
