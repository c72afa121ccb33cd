"""Gene alignment between a user's AnnData and a model's vocabulary."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import anndata as ad
import numpy as np
import pandas as pd

from gexbert_sc._constants import OUTPUT_KEYS
from gexbert_sc.data._columns import take_columns
from gexbert_sc.data._gene_matching import match_genes, query_identifiers
from gexbert_sc.data._matrix import registered_values, to_dense
from gexbert_sc.data._scale_matching import (
    MAX_REFERENCE_SAMPLES,
    ScaleMatching,
    check_scale_matching,
    dense_columns,
    match_scale_values,
)
from gexbert_sc.data._statistics import sample_rows

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

logger = logging.getLogger(__name__)


def check_var_names(var_names: pd.Index, model_var_names: Sequence[str]) -> None:
    """Raise unless ``var_names`` equal the model's genes, in the same order.

    Parameters
    ----------
    var_names
        Genes of the data passed to the model.
    model_var_names
        Genes the model was trained on, in the model's order.

    Raises
    ------
    ValueError
        Saying how many genes match, whether only the order differs, and how to align.
    """
    model_var_names = pd.Index(model_var_names)
    if var_names.equals(model_var_names):
        return
    n_shared = len(model_var_names.intersection(var_names))
    if n_shared == len(model_var_names) == len(var_names):
        problem = "holds the model's genes in another order"
    else:
        problem = (
            f"shares {n_shared} of the model's {len(model_var_names)} genes "
            f"({len(var_names) - n_shared} of its {len(var_names)} genes are unknown to the model)"
        )
    msg = (
        f"`adata` {problem}. Align it first with "
        "`adata = gexbert_sc.data.align_genes(adata, model)`, which reorders genes to the "
        "model's order and marks the model's genes absent from `adata` as missing (NaN)."
    )
    raise ValueError(msg)


@dataclass(frozen=True)
class AlignmentReport:
    """How a query's genes were matched to a model's (see :func:`align_genes`).

    Stored as a dict in ``uns["gexbert_alignment"]`` of the aligned AnnData
    (:meth:`as_uns`); ``print(report)`` gives a summary.
    """

    #: Genes of the model, in its order.
    n_model_genes: int
    #: Model genes found in the query (written under the model's names).
    matched_genes: list[str]
    #: Model genes the query lacks: missing (NaN, ``True`` in boolean masks), never zero.
    missing_genes: list[str]
    #: Query genes (their identifiers) that match no model gene: dropped.
    extra_genes: list[str]
    #: The ``var`` column matched on (``None``: ``var_names``).
    var_key: str | None = None
    #: How the shared genes' values were brought to the reference's scale (``match_scale``).
    scale_matching: str | None = None

    @property
    def n_shared(self) -> int:
        """Number of model genes found in the query."""
        return len(self.matched_genes)

    @property
    def n_dropped(self) -> int:
        """Number of query genes unknown to the model."""
        return len(self.extra_genes)

    def as_uns(self) -> dict[str, Any]:
        """Return the report as the dict stored in ``uns``, counts included.

        ``var_key`` is left out when it is ``None`` (which ``.h5ad`` cannot store).
        """
        stored = {**asdict(self), "n_shared": self.n_shared, "n_dropped": self.n_dropped}
        return {key: value for key, value in stored.items() if value is not None}

    def __str__(self) -> str:
        on = "var_names" if self.var_key is None else f"var[{self.var_key!r}]"
        scaled = (
            ""
            if self.scale_matching is None
            else f" Values of the shared genes matched to the reference by {self.scale_matching}."
        )
        return (
            f"Matched {self.n_shared} of the model's {self.n_model_genes} genes on {on}; "
            f"{len(self.missing_genes)} missing (NaN){_examples(self.missing_genes)}; "
            f"{self.n_dropped} query genes dropped{_examples(self.extra_genes)}.{scaled}"
        )


def _examples(names: list[str], n: int = 3) -> str:
    """`` (e.g. a, b, c)`` for the first ``n`` names, or nothing."""
    return f" (e.g. {', '.join(map(str, names[:n]))})" if names else ""


def align_genes(
    adata: AnnData,
    model_or_var_names: Any,
    *,
    var_key: str | None = None,
    match_scale: ScaleMatching | None = None,
    scale_reference: AnnData | None = None,
) -> AnnData:
    """Return a copy of ``adata`` whose genes are exactly the model's, in the model's order.

    Genes the model does not know are dropped; model genes absent from ``adata`` are added as
    *missing* values (NaN; ``True`` in boolean mask layers), never as zeros. Genes match by
    identifier, then case-insensitively and ignoring Ensembl version suffixes
    (``ENSG00000141510.17`` is ``ENSG00000141510``); the result carries the model's names.
    The overlap is logged and recorded in ``uns["gexbert_alignment"]``
    (:class:`AlignmentReport`); :meth:`gexbert_sc.GexBERT.prepare_query_anndata` also returns
    it.

    Sparse input stays sparse and is never densified: the result (CSR) holds the stored
    entries of the shared genes, bit for bit, and one explicit NaN per sample for each
    missing gene, so its memory is ``O(nnz + n_obs × n_missing)``. NaN stored in the matrix
    is what every model reads as missing whatever its set-up, so a sparse aligned query
    reads exactly as its dense version (a boolean ``missing_layer`` would cost as many
    entries and be ignored by models set up without one). A backed matrix is read a block
    of rows at a time.

    Parameters
    ----------
    adata
        Data to align. Its ``X`` and layers are aligned; ``obs``/``obsm``/``uns`` are kept
        (``obsm``'s arrays are shared, not copied). It is not modified.
    model_or_var_names
        A model of the family (its genes are used) or a sequence of gene names.
    var_key
        Column of ``adata.var`` holding the identifiers to match (e.g. Ensembl IDs in
        ``"gene_ids"``); ``None`` matches ``adata.var_names``.
    match_scale
        For a query measured by another technology (FISH intensities, a targeted panel's
        counts): bring the values of ``X`` on the shared genes onto the reference's scale,
        gene by gene, before the model reads them. ``"quantile"`` gives each gene the
        reference's distribution (undoes any monotone difference of scale, e.g. FISH
        intensities); ``"standardise"`` gives each gene the reference's mean and standard
        deviation and keeps the shape of the query's distribution (undoes an affine
        difference only). Both assume the query and the reference sample the same kinds of
        cells in similar proportions; both keep the order of the samples within a gene and
        leave NaN missing. ``X`` of the result is then dense; layers are not matched.
        ``None`` (default) keeps the values as they are (same technology as the reference).
    scale_reference
        The reference values matched to: an AnnData holding the shared genes (in its
        ``var_names``, the model's names) in ``X`` on the model's input scale. Default: the
        data the model was set up with (its registered layer), which needs a model with its
        data. At most 20,000 of its samples are read (a seeded subsample beyond).

    Returns
    -------
    The aligned :class:`~anndata.AnnData`. Values keep their float type (float64 stays
    float64); integers become floats, to hold NaN.

    Raises
    ------
    KeyError
        If ``var_key`` is not a column of ``adata.var``.
    ValueError
        If ``adata`` shares no gene with the model, or two of its genes match one model gene;
        with ``match_scale``: an unknown method, ``adata.X`` absent or holding infinite
        values, no reference values (a model without its data or gene names and no
        ``scale_reference``), a model trained on counts, or a ``scale_reference`` without
        ``X``, with repeated gene names or lacking shared genes.

    Examples
    --------
    >>> import gexbert_sc
    >>> panel = gexbert_sc.datasets.pbmc68k()[:, :64]
    >>> aligned = gexbert_sc.data.align_genes(panel, list(panel.var_names[::-1]))
    >>> aligned.var_names[0] == panel.var_names[-1]
    True
    """
    return align_with_report(
        adata,
        model_or_var_names,
        var_key=var_key,
        match_scale=match_scale,
        scale_reference=scale_reference,
    )[0]


def align_with_report(
    adata: AnnData,
    model_or_var_names: Any,
    *,
    var_key: str | None = None,
    match_scale: ScaleMatching | None = None,
    scale_reference: AnnData | None = None,
) -> tuple[AnnData, AlignmentReport]:
    """Do :func:`align_genes` and return ``(aligned, report)``.

    Parameters
    ----------
    adata, model_or_var_names, var_key, match_scale, scale_reference
        As in :func:`align_genes`.
    """
    check_scale_matching(match_scale)
    if match_scale is not None:
        if adata.X is None:
            msg = (
                "`match_scale` matches the values of `adata.X`, but `adata.X` is None; put "
                "the query's values in `X`."
            )
            raise ValueError(msg)
        scale_values = _scale_reference_values(model_or_var_names, scale_reference)
    target = pd.Index(getattr(model_or_var_names, "var_names", model_or_var_names))
    identifiers = query_identifiers(adata, var_key)
    positions = match_genes(identifiers, target)
    present = positions >= 0
    if not present.any():
        on = "" if var_key is None else f" (matched on `var[{var_key!r}]`)"
        msg = (
            f"`adata` shares no gene with the model's {len(target)} genes{on} "
            f"(first model genes: {list(target[:3])}, first data genes: "
            f"{list(identifiers[:3])}); check that both use the same identifiers, or pass "
            "`var_key=` naming the `adata.var` column that holds the model's kind."
        )
        raise ValueError(msg)
    used = np.zeros(adata.n_vars, dtype=bool)
    used[positions[present]] = True
    report = AlignmentReport(
        n_model_genes=len(target),
        matched_genes=list(map(str, target[present])),
        missing_genes=list(map(str, target[~present])),
        extra_genes=list(map(str, identifiers[~used])),
        var_key=var_key,
        scale_matching=match_scale,
    )
    logger.info("%s", report)
    aligned = ad.AnnData(
        X=None if adata.X is None else _aligned_matrix(adata.X, positions),
        obs=adata.obs.copy(),
        var=pd.DataFrame(index=target),
        obsm=dict(adata.obsm),
        uns=dict(adata.uns),
        layers={k: _aligned_matrix(v, positions) for k, v in adata.layers.items()},
    )
    if match_scale is not None:
        aligned.X = _matched_matrix(
            aligned.X,
            np.flatnonzero(present),
            report.matched_genes,
            scale_values,
            match_scale,
        )
    aligned.uns[OUTPUT_KEYS.ALIGNMENT_UNS] = report.as_uns()
    return aligned, report


class _ScaleReference(NamedTuple):
    """The reference values ``match_scale`` maps a query onto."""

    #: values (dense, sparse or backed), samples x genes
    matrix: Any
    #: the genes' names
    names: pd.Index
    #: ``True`` where a value is missing (a model's ``missing_layer``), or ``None``
    missing: Any | None = None


def _scale_reference_values(
    model_or_var_names: Any, scale_reference: AnnData | None
) -> _ScaleReference:
    """Return the values, gene names and missing mask that ``match_scale`` maps a query onto."""
    manager = getattr(model_or_var_names, "adata_manager", None)
    if manager is not None and manager.registry["setup_args"].get("input_scale") == "counts":
        msg = (
            "`match_scale` maps a query onto log-scale reference values, but this model was "
            "trained on counts, and matched values are not counts. To read queries from "
            "another technology, train the model on log-normalised values "
            "(`input_scale='log'`)."
        )
        raise ValueError(msg)
    if scale_reference is not None:
        if not isinstance(scale_reference, ad.AnnData):
            msg = (
                "`scale_reference` must be an AnnData of reference values, got "
                f"{type(scale_reference).__name__}."
            )
            raise TypeError(msg)
        if scale_reference.X is None:
            msg = "`scale_reference.X` is None; expected the reference's values in `X`."
            raise ValueError(msg)
        if not scale_reference.var_names.is_unique:
            repeated = scale_reference.var_names[scale_reference.var_names.duplicated()]
            msg = (
                f"`scale_reference` repeats gene names (e.g. {list(repeated[:3])}); expected "
                "unique `var_names` (`scale_reference.var_names_make_unique()`)."
            )
            raise ValueError(msg)
        return _ScaleReference(scale_reference.X, scale_reference.var_names)
    if manager is None:
        msg = (
            "`match_scale` needs reference values: pass `scale_reference=` (an AnnData of the "
            "reference's values on the model's input scale), or a model that holds the data "
            "it was set up with."
        )
        raise ValueError(msg)
    values, missing = registered_values(manager)
    return _ScaleReference(values, pd.Index(model_or_var_names.var_names), missing)


def _matched_matrix(
    matrix: Any,
    shared: np.ndarray,
    shared_names: list[str],
    reference: _ScaleReference,
    method: ScaleMatching,
) -> np.ndarray:
    """Return the aligned matrix, dense, with its ``shared`` columns matched to the reference."""
    columns = pd.Index(map(str, reference.names)).get_indexer(shared_names)
    if (columns < 0).any():
        lacking = [g for g, c in zip(shared_names, columns, strict=True) if c < 0]
        msg = (
            f"`scale_reference` lacks {len(lacking)} of the {len(shared_names)} shared genes "
            f"(e.g. {', '.join(lacking[:3])}); it must hold every gene the query shares with "
            "the model, under the model's names."
        )
        raise ValueError(msg)
    values = to_dense(matrix)  # a new array: the aligned copy's own
    rows = sample_rows(reference.matrix.shape[0], MAX_REFERENCE_SAMPLES, seed=0)
    reference_values = dense_columns(reference.matrix, columns, rows)
    if reference.missing is not None:
        reference_values[dense_columns(reference.missing, columns, rows) > 0] = np.nan
    matched = match_scale_values(
        values[:, shared].astype(np.float64), reference_values, method, shared_names
    )
    values[:, shared] = matched.astype(values.dtype)
    return values


def _aligned_matrix(matrix: Any, positions: np.ndarray) -> Any:
    """Columns at ``positions``; ``-1`` gives a missing column (NaN, or ``True`` for masks)."""
    is_mask = np.dtype(matrix.dtype) == np.bool_
    return take_columns(matrix, positions, fill=True if is_mask else np.nan)
