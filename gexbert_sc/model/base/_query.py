"""Map new data sets onto a trained model: align their genes, or fine-tune a copy on them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anndata as ad
import pandas as pd

from gexbert_sc.data._alignment import AlignmentReport, align_with_report
from gexbert_sc.model.base._base import GexBERTBase, _registered_genes, _saved_names
from gexbert_sc.model.base._saved_model import read_model_file
from gexbert_sc.utils import read_manifest

if TYPE_CHECKING:
    from typing import Self

    from anndata import AnnData

    from gexbert_sc.data._scale_matching import ScaleMatching

#: What ``reference`` may be: a trained model, or the directory of a saved one.
Reference = GexBERTBase | str | os.PathLike


class QueryMixin:
    """Query mapping in the manner of :class:`scvi.model.base.ArchesMixin` (scArches)."""

    @staticmethod
    def prepare_query_anndata(
        adata: AnnData,
        reference: Reference,
        *,
        var_key: str | None = None,
        match_scale: ScaleMatching | None = None,
        scale_reference: AnnData | None = None,
        return_report: bool = False,
    ) -> AnnData | tuple[AnnData, AlignmentReport]:
        """Return a copy of a query with the reference model's genes, in its order.

        The name is scvi-tools'; unlike scvi-tools, genes the query lacks are *missing*
        (NaN), never zeros, and the query is never modified in place. This is
        :func:`gexbert_sc.data.align_genes` (matching rules, sparse storage) with the
        reference given as a model or a saved directory.

        Parameters
        ----------
        adata
            The query AnnData (any genes, any order; dense, sparse or backed).
        reference
            A model of the GexBERT family, or the directory of a saved one (only its
            manifest, or its ``model.pt`` for a model saved without one, is read).
        var_key
            Column of ``adata.var`` holding identifiers to match (e.g. ``"gene_ids"`` for
            Ensembl IDs); ``None`` matches ``adata.var_names``.
        match_scale
            ``"quantile"`` or ``"standardise"`` to bring a query from another technology
            (e.g. FISH intensities) onto the reference's scale on the shared genes; ``None``
            (default) for a query on the reference's scale. See
            :func:`gexbert_sc.data.align_genes`.
        scale_reference
            The reference values to match to (default: the reference model's own data;
            needed for a saved directory or a model without its data).
        return_report
            Also return the :class:`~gexbert_sc.data.AlignmentReport`.

        Returns
        -------
        The aligned AnnData (its ``uns["gexbert_alignment"]`` holds the report as a dict),
        and with ``return_report`` the report too.

        Raises
        ------
        TypeError
            If ``adata`` is not an AnnData or ``reference`` is neither a model nor a path.
        KeyError
            If ``var_key`` is not a column of ``adata.var``.
        ValueError
            If the query shares no gene with the reference, or two query genes match one
            reference gene; for ``match_scale``, as :func:`gexbert_sc.data.align_genes`.

        Examples
        --------
        >>> query, report = gexbert_sc.GexBERT.prepare_query_anndata(
        ...     query, "reference_model/", var_key="gene_ids", return_report=True
        ... )
        >>> print(report)
        """
        _check_anndata(adata)
        genes = reference_genes(reference)
        aligned, report = align_with_report(
            adata,
            reference if isinstance(reference, GexBERTBase) else genes,
            var_key=var_key,
            match_scale=match_scale,
            scale_reference=scale_reference,
        )
        return (aligned, report) if return_report else aligned

    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference: Reference,
        *,
        freeze_encoder: bool = False,
        var_key: str | None = None,
    ) -> Self:
        """Return a new model on the reference's weights and statistics, set up on a query.

        As scvi-tools' ``load_query_data`` (scArches): the new model is a copy (the
        reference is untouched) whose statistics are the reference's, not refitted, and
        ``model.train()`` then fine-tunes it on the query. Freezing applies to this
        object's training; a saved and reloaded model trains all its weights.

        Parameters
        ----------
        adata
            The query. If its genes are already the reference's, in order (e.g. the output
            of :meth:`prepare_query_anndata`) and ``var_key`` is ``None``, it is set up in
            place and becomes the model's data; otherwise it is aligned into a copy
            (:meth:`prepare_query_anndata`) and left unchanged. It is set up with the
            reference's arguments (layer, batches, missing layer, input scale); its
            batches must be batches the reference was trained on. A reference set up with a
            MuData takes an AnnData of its expression modality's genes (its layer and batch
            column in the AnnData).
        reference
            A trained model of this class, or the directory of a saved one.
        freeze_encoder
            Keep the pretrained encoder (gene, level and value embeddings, profile
            projection, ``[CLS]``, encoder blocks) fixed (``requires_grad`` off) and train
            the decoder only; ``False`` fine-tunes every weight.
        var_key
            As in :meth:`prepare_query_anndata`.

        Returns
        -------
        The new model, untrained (``is_trained`` is ``False``), with ``model.adata`` the
        set-up query.

        Raises
        ------
        TypeError
            If an argument has the wrong type (naming it, what was found and what is
            expected).
        KeyError
            If the query lacks the reference's batch column or registered layers.
        ValueError
            If the query shares no gene with the reference, has ambiguous gene matches,
            batches unseen in training, or values on another scale than the reference's.
            Every check runs before ``adata`` is touched.
        """
        _check_anndata(adata)
        if not isinstance(freeze_encoder, bool):
            msg = f"`freeze_encoder` must be True or False, got {freeze_encoder!r}."
            raise TypeError(msg)
        reference = _reference_model(cls, reference)
        if var_key is None and adata.var_names.equals(reference.var_names):
            query = adata
        else:
            query = align_with_report(adata, reference, var_key=var_key)[0]
        setup = _query_setup(reference, query)
        cls.setup_anndata(query, source_registry=reference.batch_registry(), **setup)
        model = cls._from_pretrained(reference, query)
        frozen = set(model.module.encoder_parameter_names) if freeze_encoder else set()
        for name, parameter in model.module.named_parameters():
            parameter.requires_grad_(name not in frozen)
        return model


def reference_genes(reference: Reference) -> pd.Index:
    """Return the genes of a model, or of the model saved in a directory, in order.

    Parameters
    ----------
    reference
        A model of the family, or a saved model's directory.

    Raises
    ------
    TypeError
        If ``reference`` is neither.
    FileNotFoundError
        If the directory holds no saved model.
    """
    if isinstance(reference, GexBERTBase):
        return reference.var_names
    directory = _reference_directory(reference)
    names = _saved_names(None)
    manifest = read_manifest(directory, names["manifest"])
    if manifest is not None:
        return pd.Index(manifest["vocabulary"])
    saved = read_model_file(directory / names["model"])
    return pd.Index(_registered_genes(saved["attr_dict"]["registry_"]))


def _reference_directory(reference: Any) -> Path:
    """Return ``reference`` as a path, or raise a :class:`TypeError` saying what is expected."""
    if not isinstance(reference, str | os.PathLike):
        msg = (
            "`reference` must be a trained GexBERT model or the directory of a saved one, "
            f"got {type(reference).__name__}."
        )
        raise TypeError(msg)
    return Path(reference)


def _reference_model(cls: type, reference: Any) -> GexBERTBase:
    """Return the trained model of class ``cls`` that ``reference`` is, or that it names."""
    if not isinstance(reference, GexBERTBase):
        return cls.load(_reference_directory(reference), adata=False)
    if not isinstance(reference, cls):
        msg = (
            f"`reference` must be a trained {cls.__name__} (or the directory of a saved one), "
            f"got a {type(reference).__name__}."
        )
        raise TypeError(msg)
    reference._check_if_trained(warn=False)
    return reference


def _check_anndata(adata: Any) -> None:
    """Raise a :class:`TypeError` unless ``adata`` is an AnnData."""
    if not isinstance(adata, ad.AnnData):
        msg = f"`adata` must be an AnnData, got {type(adata).__name__}."
        raise TypeError(msg)


def _query_setup(reference: GexBERTBase, query: AnnData) -> dict[str, Any]:
    """Check ``query`` against the reference's set-up; return the set-up arguments to use.

    The labels column is registered only if the query has it.

    Raises
    ------
    KeyError
        If the batch column or a registered layer is missing.
    ValueError
        If a batch is unseen in training, or the values are on another scale.
    """
    setup = reference.expression_setup
    reference.reading_view(query)  # refuses a missing batch column or layer, unseen batches
    reference._check_query_values(query)
    if setup["labels_key"] is not None and setup["labels_key"] not in query.obs:
        setup["labels_key"] = None
    return setup
