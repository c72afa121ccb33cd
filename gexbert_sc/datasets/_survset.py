"""Breast cancer microarray survival cohorts shipped with SurvSet."""

from __future__ import annotations

import functools
import logging
import re

import numpy as np
import pandas as pd
from anndata import AnnData
from anndata.utils import make_index_unique

from gexbert_sc._constants import OUTPUT_KEYS

from ._package_files import DataPackage, dataset_info

logger = logging.getLogger(__name__)

SURVSET = DataPackage(
    module="SurvSet",
    distribution="SurvSet",
    install="pip install survset==0.2.11",
    license="GPL-3.0",
)
_PICKLES = "resources/pickles"
_GENE_PREFIX = "num_HS_"
# Cohorts with gene columns ``num_HS_<SYMBOL>``; any other pickle holding such columns works too.
_HS_COHORTS = ("gse1992", "gse3143", "gse4335")
# nki70 names its 70 signature genes ``num_<SYMBOL>`` next to the clinical ``num_Age``; in
# DLBCL (anonymous ``num_gene_<i>``) and vdv (GenBank accessions) every ``num_`` column is a gene.
_OTHER_COHORTS = {
    "nki70": ("num_", frozenset({"num_Age"})),
    "DLBCL": ("num_", frozenset()),
    "vdv": ("num_", frozenset()),
}
# two-colour arrays: log ratios against a reference, centred near 0
_LOG_RATIO_COHORTS = frozenset(_OTHER_COHORTS)
_COHORTS = tuple(sorted((*_HS_COHORTS, *_OTHER_COHORTS)))
_SURVIVAL = ("time", "event")


def _gene_columns(name: str, columns: pd.Index) -> tuple[list[str], str]:
    """Return a cohort's gene columns and the prefix to strip from them."""
    if name in _OTHER_COHORTS:
        prefix, clinical = _OTHER_COHORTS[name]
        genes = [c for c in columns if c.startswith(prefix) and c not in clinical]
        return genes, prefix
    return [c for c in columns if c.startswith(_GENE_PREFIX)], _GENE_PREFIX


def _clinical(frame: pd.DataFrame) -> pd.DataFrame:
    """Return survival and clinical columns: ``time``, ``event``, ``fac_*``, other ``num_*``."""
    obs = pd.DataFrame(index=frame.index)
    if "pid" in frame.columns:
        obs["pid"] = frame["pid"].astype(str)
    obs["time"] = frame["time"].astype(np.float64)
    obs["event"] = frame["event"].astype(np.int64)
    for column in frame.columns:
        if column.startswith("fac_"):
            # string categories so the AnnData writes to h5ad; SurvSet's "missing"/"na" stay
            categorical = frame[column].astype("category")
            obs[column] = categorical.cat.rename_categories(str)
        elif column.startswith("num_"):
            obs[column] = frame[column].astype(np.float64)
    return obs


@functools.lru_cache(maxsize=8)
def _load(path: str, name: str) -> AnnData | None:
    """Parse one pickle into an AnnData, or ``None`` if it holds no gene columns."""
    frame = pd.read_pickle(path)
    frame.columns = frame.columns.astype(str)
    genes, prefix = _gene_columns(name, frame.columns)
    if not genes:
        return None
    missing = [c for c in _SURVIVAL if c not in frame.columns]
    if missing:
        raise ValueError(f"SurvSet cohort {name!r} lacks survival columns {missing}")

    is_gene = frame.columns.isin(genes)
    x = frame.loc[:, is_gene].to_numpy(dtype=np.float32)  # NaN (missing value) kept as NaN
    obs = _clinical(frame.loc[:, ~is_gene])
    if "pid" in obs.columns and obs["pid"].is_unique:
        obs.index = pd.Index(obs["pid"].to_numpy())
    else:
        obs.index = pd.Index([f"{name}_{i}" for i in range(len(obs))])
    genes = frame.columns[is_gene].tolist()  # repeats a duplicated column name
    symbols = pd.Index([g[len(prefix) :] for g in genes])
    if not symbols.is_unique:
        logger.info("SurvSet %s: duplicated gene symbols made unique", name)
        symbols = make_index_unique(symbols)
    var = pd.DataFrame({"source_name": genes}, index=symbols)
    adata = AnnData(X=x, obs=obs, var=var)
    logger.info(
        "Loaded SurvSet %s: %d patients x %d genes, %d missing values",
        name,
        adata.n_obs,
        adata.n_vars,
        int(np.isnan(x).sum()),
    )
    return adata


def survset(name: str = "gse3143") -> AnnData:
    """Load a cancer microarray cohort with survival outcome from SurvSet.

    ``X`` holds the log-scale microarray values as a dense float32 array; NaN marks a missing
    value and is kept. ``var_names`` are gene symbols (the ``num_HS_`` prefix is stripped; the
    original column names are in ``var["source_name"]``). ``obs`` holds ``pid``, ``time``
    (float), ``event`` (int, 1 = event), the clinical ``fac_*`` columns (categorical with string
    categories; SurvSet encodes missing as a ``"missing"`` / ``"na"`` category) and the
    non-gene ``num_*`` columns (float, may hold NaN).

    Parameters
    ----------
    name
        SurvSet data set. Breast cancer: ``"gse1992"`` (124 x 15,528 genes), ``"gse3143"``
        (158 x 8,659), ``"gse4335"`` (115 x 12,793), ``"vdv"`` (78 x 4,705, log ratios,
        genes named by GenBank accession) and ``"nki70"`` (144 x 70 signature genes, log
        ratios); diffuse large B-cell lymphoma: ``"DLBCL"`` (240 x 7,399, centred log
        ratios, anonymous genes ``gene_<i>``). Any other SurvSet pickle whose columns
        include ``num_HS_`` genes works too.

    Returns
    -------
    A new :class:`~anndata.AnnData` (patients x genes) on every call;
    ``uns["gexbert_dataset"]`` names the source, licence (GPL-3.0), value scale
    (``"log microarray"``, or ``"log ratio"`` for the two-colour cohorts) and the survival
    keys (``duration_key``, ``event_key``).

    Raises
    ------
    ValueError
        If ``name`` is not a SurvSet gene-expression cohort.
    ModuleNotFoundError
        If SurvSet is not installed (``pip install survset==0.2.11``).

    Examples
    --------
    >>> from gexbert_sc.datasets import survset
    >>> adata = survset("gse3143")
    >>> adata.shape
    (158, 8659)
    >>> adata.obs[["time", "event"]].dtypes.tolist()
    [dtype('float64'), dtype('int64')]
    """
    directory = SURVSET.directory()
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise ValueError(
            f"Unknown SurvSet cohort {name!r}; gene-expression cohorts: {list(_COHORTS)}"
        )
    relative = f"{_PICKLES}/{name}.pickle"
    path = directory / _PICKLES / f"{name}.pickle"
    if not path.is_file():
        if name in _COHORTS:
            SURVSET.file(relative)  # raises FileNotFoundError naming the expected version
        raise ValueError(
            f"Unknown SurvSet cohort {name!r}; gene-expression cohorts: {list(_COHORTS)}"
        )
    adata = _load(str(path), name)
    if adata is None:
        raise ValueError(
            f"SurvSet data set {name!r} has no {_GENE_PREFIX} gene columns; "
            f"gene-expression cohorts: {list(_COHORTS)}"
        )
    adata = adata.copy()
    adata.uns[OUTPUT_KEYS.DATASET_UNS] = dataset_info(
        f"survset_{name}",
        SURVSET,
        [relative],
        "log ratio" if name in _LOG_RATIO_COHORTS else "log microarray",
        duration_key="time",
        event_key="event",
    )
    return adata
