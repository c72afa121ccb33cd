"""What every GexBERT model shares: construction, genes, checked save and load."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd
import scvi
import torch
from scvi.data import AnnDataManager
from scvi.data._constants import _FIELD_REGISTRIES_KEY, _MODEL_NAME_KEY
from scvi.data._download import _download
from scvi.data.fields import BaseAnnDataField
from scvi.model.base import BaseModelClass
from scvi.model.base._constants import SAVE_KEYS

from gexbert_sc._constants import OUTPUT_KEYS, REGISTRY_KEYS
from gexbert_sc.data import check_var_names, default_validation_indices, fit_expression_statistics
from gexbert_sc.data._input_scale import ScaleDecision
from gexbert_sc.data._matrix import registered_values
from gexbert_sc.data._statistics import GenesNeverObservedError
from gexbert_sc.data._validation import expression_data
from gexbert_sc.model.base._reading import query_expression, query_obs_column, registered_layout
from gexbert_sc.model.base._saved_model import (
    check_loaded,
    check_model_class,
    describe_statistics,
    read_model_file,
)
from gexbert_sc.module import GexBERTModule
from gexbert_sc.utils import (
    MANIFEST_NAME,
    atomic_directory,
    read_manifest,
    recover_replaced,
    verify_files,
    write_manifest,
)

if TYPE_CHECKING:
    from typing import Self

    from anndata import AnnData
    from lightning import LightningDataModule
    from mudata import MuData

logger = logging.getLogger(__name__)


#: hyper-parameters added after 0.1, with the values that reproduce a model saved without them
LEGACY_HPARAMS: dict[str, Any] = {"withhold_range": None, "profile_fit": False}


class GexBERTBase(BaseModelClass):
    """Base of the GexBERT model family (not used directly; see :class:`~gexbert_sc.GexBERT`).

    A subclass checks its hyper-parameters, then calls ``super().__init__(adata, registry,
    seed=..., module_kwargs=...)``. The per-gene statistics (library shares, bin edges, means,
    principal axes) are fitted on ``adata`` **only when no registry is passed**: :meth:`load`
    and :meth:`_from_pretrained` pass one and then load the saved or pretrained weights,
    statistics included, so a model can be built on an AnnData that measured only a panel of
    the vocabulary.

    Parameters
    ----------
    adata
        AnnData (or MuData) set up with the subclass's ``setup_anndata``.
    registry
        Registry of a saved or pretrained model; statistics are fitted only without it.
    seed
        Seed of weight initialisation and training; ``None`` uses ``scvi.settings.seed``
        if it is set, else 0.
    module_kwargs
        Arguments of the module class besides ``n_vars``, ``n_batch`` and statistics.
    """

    _module_cls = GexBERTModule

    def __init__(
        self,
        adata: AnnData | MuData | None,
        registry: dict | None,
        *,
        seed: int | None,
        module_kwargs: dict[str, Any],
    ):
        if adata is not None and registry is not None:
            check_var_names(
                expression_data(adata, registry["setup_args"]).var_names,
                _registered_genes(registry),
            )
        super().__init__(adata, registry)
        if seed is None:
            seed = scvi.settings.seed if scvi.settings.seed is not None else 0
        self.seed_ = int(seed)
        statistics: dict[str, Any] = {}
        if registry is None and adata is not None:
            statistics = self._fit_statistics(module_kwargs["n_levels"], module_kwargs["d_model"])
        with torch.random.fork_rng():
            torch.manual_seed(self.seed_)
            self.module = self._module_cls(
                n_vars=self.summary_stats.n_vars,
                n_batch=self.summary_stats.n_batch,
                **module_kwargs,
                **statistics,
                **self._task_module_kwargs(),
            )

    def _task_module_kwargs(self) -> dict[str, Any]:
        """Return the module arguments a task model derives from its data (none here).

        Called after the data are registered and before the module is built, e.g. for the
        number of classes and the class weights of a classifier.
        """
        return {}

    def _fit_statistics(self, n_levels: int, d_model: int) -> dict[str, Any]:
        """Fit the per-gene statistics on the registered data (seed 0, whatever ``seed``).

        The statistics describe the data, not a training run, so models of different seeds
        on the same data share them. They are fitted without the samples that ``train()``
        validates on by default (:func:`~gexbert_sc.data.default_validation_indices`), so
        that no part of the model has seen those (all samples are read if a gene is
        observed in none of the others).
        """
        manager = self.adata_manager
        matrix, missing = registered_values(manager)
        # resolved at set-up (the values were scanned then)
        is_counts = manager.registry["setup_args"]["input_scale"] == "counts"
        fit = partial(
            fit_expression_statistics,
            matrix,
            missing,
            is_counts,
            n_levels,
            np.asarray(self.var_names),
            n_axes=d_model,
            seed=0,
        )
        try:
            stats = fit(exclude_rows=default_validation_indices(matrix.shape[0]))
        except GenesNeverObservedError:
            logger.info(
                "Some genes are observed only in the default validation samples: the "
                "statistics are fitted on every sample."
            )
            stats = fit()
        return {
            "is_counts": is_counts,
            "gene_share": torch.from_numpy(stats.gene_share),
            "bin_edges": torch.from_numpy(stats.bin_edges),
            "gene_mean": torch.from_numpy(stats.gene_mean),
            "principal_axes": torch.from_numpy(stats.principal_axes),
            "gene_min": torch.from_numpy(stats.gene_min),
            "gene_max": torch.from_numpy(stats.gene_max),
            "max_size_factor": stats.max_size_factor,
        }

    @classmethod
    def _from_pretrained(
        cls, pretrained: GexBERTBase, adata: AnnData | MuData | None = None, **init_kwargs: Any
    ) -> Self:
        """Build a model of this class on a pretrained one, as ``SCANVI.from_scvi_model`` does.

        ``cls(adata, pretrained.registry_, **hyper-parameters)`` (no statistics are fitted),
        then the pretrained weights, statistics included, are loaded (``strict=False``: a
        head's parameters keep their initialisation). Task models call this from their
        ``from_gexbert_model``.

        Parameters
        ----------
        pretrained
            A trained model of the family.
        adata
            Set-up data with the pretrained model's genes in its order (a panel aligned with
            :func:`gexbert_sc.data.align_genes` works); default: the pretrained model's.
        **init_kwargs
            Constructor arguments of ``cls`` besides the pretrained hyper-parameters.

        Returns
        -------
        The new model, untrained (``is_trained`` is ``False``).
        """
        pretrained._check_if_trained(warn=False)
        adata = pretrained.adata if adata is None else adata
        model = cls(adata, pretrained.registry_, **{**pretrained.hparams, **init_kwargs})
        model.module.load_state_dict(pretrained.module.state_dict(), strict=False)
        return model

    @classmethod
    def _register(
        cls,
        data: AnnData | MuData,
        fields: list[BaseAnnDataField],
        setup_method_args: dict,
        kwargs: dict,
        scale: ScaleDecision,
    ) -> None:
        """Register ``fields`` of ``data`` with a new manager of this class (set-up's last step).

        The registry's ``input_scale`` is the resolved scale (``"counts"`` or ``"log"``), which
        construction reads without scanning the values again; the decision and its reason
        are logged and recorded in ``data.uns["gexbert"]["input_scale"]``.
        """
        setup_method_args["setup_args"]["input_scale"] = scale.resolved
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(data, **kwargs)
        cls.register_manager(manager)
        logger.info(scale.describe())
        data.uns.setdefault(OUTPUT_KEYS.UNS, {})["input_scale"] = scale.as_dict()

    # ------------------------------------------------------------------ description
    @property
    def hparams(self) -> dict[str, Any]:
        """Constructor arguments of this model (hyper-parameters and ``seed``)."""
        params = dict(self.init_params_["non_kwargs"])
        for extra in self.init_params_["kwargs"].values():
            params.update(extra)  # a task model's `**architecture`
        params["seed"] = self.seed_
        return params

    @property
    def _model_summary_string(self) -> str:
        """One-line description, read from the module (so it holds for loaded models too)."""
        names = ("d_model", "n_layers", "n_heads", "n_levels", "n_context")
        described = ", ".join(f"{k}={self.hparams[k]}" for k in names if k in self.hparams)
        scale = "counts" if bool(self.module.input_is_counts) else "log"
        return (
            f"{type(self).__name__} model with {described}, "
            f"genes={self.summary_stats.n_vars}, input={scale}"
        )

    @_model_summary_string.setter
    def _model_summary_string(self, value: str) -> None:
        # scvi-tools' constructor assigns an empty string; the summary is derived instead
        pass

    def provenance(self) -> dict[str, Any]:
        """Describe this model for the provenance record of an output.

        Returns
        -------
        ``{"model": class name, "summary": one line, "model_params": hyper-parameters}``,
        with ``None`` values left out and tuples as lists, so that ``.h5ad`` can store it
        (written to ``uns`` by the ``tl`` functions).
        """
        params = {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in self.hparams.items()
            if value is not None
        }
        return {
            "model": type(self).__name__,
            "summary": self._model_summary_string,
            "model_params": params,
        }

    # ------------------------------------------------------------------ genes and data
    @property
    def var_names(self) -> pd.Index:
        """Genes of the model's vocabulary, in order."""
        return pd.Index(_registered_genes(self.registry_))

    def expression_of(self, data: AnnData | MuData) -> AnnData:
        """Return the AnnData that holds the model's expression values in ``data``.

        Parameters
        ----------
        data
            An AnnData (returned as is) or a MuData: its expression modality (the one the
            model was set up with, or for a model set up with an AnnData, the one modality
            with the model's genes in its order).

        Returns
        -------
        The AnnData whose values are read and whose ``layers`` receive restored values.

        Raises
        ------
        KeyError, ValueError
            If a MuData has no such modality (its modalities are named).
        """
        return query_expression(data, self.registry_["setup_args"], self.var_names)

    @property
    def expression_setup(self) -> dict[str, Any]:
        """The expression set-up in the terms of :meth:`~gexbert_sc.GexBERT.setup_anndata`.

        The same keys whether the model was set up with an AnnData or a MuData, so that an
        AnnData of the same genes can be read, or set up for a task model, like the data the
        model was trained on.

        Returns
        -------
        ``layer`` (a MuData set-up's ``rna_layer``), ``batch_key``, ``labels_key``,
        ``missing_layer`` and ``input_scale``: the scale the model reads, ``"counts"`` or
        ``"log"`` (never ``"auto"``: it is read from the trained module).
        """
        setup = self.registry_["setup_args"]
        return {
            "layer": setup.get("layer", setup.get("rna_layer")),
            "batch_key": setup.get("batch_key"),
            "labels_key": setup.get("labels_key"),
            "missing_layer": setup.get("missing_layer"),
            "input_scale": "counts" if bool(self.module.input_is_counts) else "log",
        }

    def check_batches(self, data: AnnData | MuData) -> None:
        """Refuse data whose batches the model cannot read.

        Parameters
        ----------
        data
            AnnData or MuData to read, or to set up for a model built on this one.

        Raises
        ------
        KeyError
            If the model was set up with a batch column that ``data`` lacks.
        ValueError
            If ``data`` holds batches the model was not trained on (named): their batch
            embeddings do not exist.
        """
        self._batches(data)

    def _batches(self, data: AnnData | MuData) -> pd.Series | None:
        """Return the checked batch column of ``data`` (``None`` for a model without batches)."""
        batch_key = self.expression_setup["batch_key"]
        if batch_key is None:
            return None
        batches = query_obs_column(data, self.expression_of(data), batch_key, "batch_key")
        known = self._registered_categories(REGISTRY_KEYS.BATCH_KEY)
        unseen = sorted(set(map(str, batches)) - set(map(str, known)))
        if unseen:
            msg = (
                f"`adata.obs[{batch_key!r}]` has batches the model was not trained on: "
                f"{unseen[:5]}; it knows {list(known)}."
            )
            raise ValueError(msg)
        return batches

    def batch_registry(self) -> dict[str, Any]:
        """Return this model's expression and batch fields, as a registry to transfer.

        Passed as ``source_registry`` to a set-up, it gives the new data this model's batch
        codes (which the batch embedding is indexed by) and checks its number of genes; the
        other fields (labels, survival columns) are registered afresh.

        Returns
        -------
        ``{"field_registries": {...}}`` with the expression and batch fields.
        """
        fields = self.registry_[_FIELD_REGISTRIES_KEY]
        kept = (REGISTRY_KEYS.X_KEY, REGISTRY_KEYS.BATCH_KEY)
        return {_FIELD_REGISTRIES_KEY: {key: fields[key] for key in kept}}

    def reading_view(self, data: AnnData | MuData) -> AnnData | MuData:
        """Return new data that share ``data``'s values and batches, and nothing else.

        The getters read a query through it: the registered ``obs`` columns other than the
        batches (labels; a survival model's time and event) are filled with placeholders
        (:meth:`_placeholder_obs`; no getter reads them), so a query without these columns,
        or with label categories unseen in training, reads as any other; and scvi-tools'
        registration columns go to the view, not to ``data``. The matrices are shared, not
        copied. The view is laid out as the model's own data were set up (an AnnData, or a
        MuData around the expression), whichever ``data`` is: a model set up with a MuData
        reads an AnnData of the same genes, and the reverse.

        Parameters
        ----------
        data
            AnnData, or MuData, with the model's genes in its order (see
            :meth:`expression_of`).

        Returns
        -------
        The view, with the registered layer (or ``X``), missing layer, batch column and
        placeholder columns.
        """
        setup = self.expression_setup
        expression = self.expression_of(data)
        batches = self._batches(data)
        obs = pd.DataFrame(index=expression.obs_names.copy())
        if batches is not None:
            obs[setup["batch_key"]] = batches.to_numpy()
        for key, value in self._placeholder_obs().items():
            obs[key] = value
        layer_names = [name for name in (setup["layer"], setup["missing_layer"]) if name]
        for name in layer_names:
            if name not in expression.layers:
                msg = f"`adata.layers` has no {name!r}, which the model was set up with."
                raise KeyError(msg)
        layers = {name: expression.layers[name] for name in layer_names}
        x = expression.X if setup["layer"] is None else None
        view = ad.AnnData(X=x, obs=obs, var=expression.var[[]].copy(), layers=layers)
        return registered_layout(view, self.registry_["setup_args"])

    def _placeholder_obs(self) -> dict[str, Any]:
        """Values :meth:`reading_view` writes into the registered ``obs`` columns (never read).

        Here the labels column, if one is registered, gets a registered category.
        """
        labels_key = self.registry_["setup_args"].get("labels_key")
        if labels_key is None:
            return {}
        return {labels_key: self._registered_categories(REGISTRY_KEYS.LABELS_KEY)[0]}

    def _field_state(self, registry_key: str) -> dict[str, Any]:
        """Return the state registry of a registered field (categories, column names, ...)."""
        return self.registry_["field_registries"][registry_key]["state_registry"]

    def _registered_categories(self, registry_key: str) -> np.ndarray:
        """Categories of a registered categorical field, in code order."""
        return np.asarray(self._field_state(registry_key)["categorical_mapping"])

    def _validate_anndata(
        self, adata: AnnData | MuData | None = None, copy_if_view: bool = True
    ) -> AnnData | MuData:
        if adata is not None:
            check_var_names(self.expression_of(adata).var_names, self.var_names)
        return super()._validate_anndata(adata, copy_if_view=copy_if_view)

    def _gene_indices(self, genes: Sequence[str] | None) -> np.ndarray:
        """Positions of ``genes`` in the vocabulary (all genes for ``None``)."""
        if genes is None:
            return np.arange(len(self.var_names))
        positions = self.var_names.get_indexer(pd.Index(genes))
        if (positions < 0).any():
            unknown = [g for g, p in zip(genes, positions, strict=True) if p < 0]
            msg = (
                f"`genes` holds {len(unknown)} genes unknown to the model "
                f"(e.g. {unknown[:5]}); the model knows {len(self.var_names)} genes."
            )
            raise KeyError(msg)
        return positions

    def _n_rows(self, adata: AnnData | MuData | None, indices: Sequence[int] | None) -> int:
        """Return how many samples a getter returns: ``len(indices)``, else all of ``adata``."""
        if indices is not None:
            return len(indices)
        return (self.adata if adata is None else adata).n_obs

    def _check_if_trained(self, warn: bool = False, message: str | None = None) -> bool:
        """Whether the model is trained; if not, raise a :class:`RuntimeError` (or warn)."""
        if self.is_trained_:
            return True
        msg = message or (
            f"The {type(self).__name__} model is not trained yet; run `model.train()` first."
        )
        if warn:
            warnings.warn(msg, UserWarning, stacklevel=2)
            return False
        raise RuntimeError(msg)

    def save(
        self,
        dir_path: str | os.PathLike,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        save_kwargs: dict | None = None,
        legacy_mudata_format: bool = False,
        datamodule: LightningDataModule | None = None,
        **anndata_write_kwargs: Any,
    ) -> None:
        """Save the model atomically, with a manifest that :meth:`load` checks.

        The files of :meth:`scvi.model.base.BaseModelClass.save` (``model.pt``, and
        ``adata.h5ad`` with ``save_anndata``) and the manifest ``gexbert_manifest.json``
        (format version, package version, model class, vocabulary, fitted statistics,
        hyper-parameters, size and SHA-256 of every file) are written into a hidden
        directory beside ``dir_path``, flushed to disk and moved into place: a save killed at
        any moment leaves the previous model or the new one at ``dir_path``. Replacing a
        model keeps the other files of its directory (e.g. another ``prefix``'s model).

        Parameters
        ----------
        dir_path
            Directory of the saved model.
        prefix
            Prefix of the saved file names.
        overwrite
            Whether to replace a model already at ``dir_path``.
        save_anndata
            Whether to save the AnnData (or MuData) too.
        save_kwargs
            Passed to :func:`torch.save`.
        legacy_mudata_format, datamodule
            As in :meth:`scvi.model.base.BaseModelClass.save`.
        **anndata_write_kwargs
            Passed to :meth:`anndata.AnnData.write`.

        Raises
        ------
        FileExistsError
            If ``dir_path`` exists and ``overwrite`` is ``False``, or it is not a directory.
        """
        names = _saved_names(prefix)
        with atomic_directory(dir_path, overwrite=overwrite, owned=names.values()) as staging:
            super().save(
                str(staging),
                prefix=prefix,
                overwrite=True,
                save_anndata=save_anndata,
                save_kwargs=save_kwargs,
                legacy_mudata_format=legacy_mudata_format,
                datamodule=datamodule,
                **anndata_write_kwargs,
            )
            description = {
                "model_class": type(self).__name__,
                **self._saved_description(),
                "hparams": self.hparams,
            }
            write_manifest(staging, names["manifest"], description)

    def _saved_description(self) -> dict[str, Any]:
        """Return the vocabulary and statistics that a manifest records and :meth:`load` checks."""
        return {
            "vocabulary": list(map(str, self.var_names)),
            "statistics": describe_statistics(self.module.state_dict()),
        }

    @classmethod
    def load(
        cls, dir_path: str | os.PathLike, adata: AnnData | MuData | None = None, **kwargs: Any
    ) -> Self:
        """Load a saved model after checking its files, refusing data with other genes.

        A directory with a manifest (saved since 0.2) is refused if its format is newer than
        this package reads, if another model class saved it, or if a file it reads (``model.pt``;
        the saved data too when ``adata`` is ``None``) is missing or differs from the size and
        SHA-256 the manifest records. A directory saved by 0.1 (no manifest) loads as before.
        If ``dir_path`` is missing because a save was killed mid-replacement (where the
        directories cannot be exchanged in one step), the previous model is moved back first.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        adata
            Data to attach; its genes must equal the model's genes in the same order (align
            with :func:`gexbert_sc.data.align_genes`). ``None`` loads the AnnData saved with
            the model; ``False`` loads without data.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load`.

        Returns
        -------
        The loaded model; its outputs are bit-identical to the saved model's.

        Raises
        ------
        FileNotFoundError
            If ``dir_path``, its ``model.pt`` or a file its manifest lists is missing.
        ValueError
            If a file is damaged, the format is newer, another class saved the model, or
            ``adata``'s genes differ from the model's or are in another order.
        """
        directory = Path(dir_path)
        names = _saved_names(kwargs.get("prefix"))
        if kwargs.get("backup_url") is not None:
            _download(kwargs["backup_url"], str(directory), names["model"])
        recover_replaced(directory)
        if not directory.is_dir():
            msg = f"`dir_path` {str(directory)!r} does not exist or is not a directory."
            raise FileNotFoundError(msg)
        allowed = kwargs.get("allowed_classes_names_list") or ()
        manifest = read_manifest(directory, names["manifest"])
        if manifest is not None:
            check_model_class(directory, manifest["model_class"], cls, allowed)
            read = manifest["files"] if adata is None else [names["model"]]
            verify_files(directory, manifest, read)
        saved = read_model_file(directory / names["model"])
        registry = saved["attr_dict"]["registry_"]
        if manifest is None:  # saved by 0.1: the registry names the class
            check_model_class(directory, registry.get(_MODEL_NAME_KEY, cls.__name__), cls, allowed)
        if adata is not None and adata is not False:
            expression = expression_data(adata, registry["setup_args"])
            check_var_names(expression.var_names, _registered_genes(registry))
        try:
            model = super().load(str(directory), adata=adata, **kwargs)
        except RuntimeError as error:
            if "state_dict" not in str(error):
                raise
            first_line = str(error).strip().splitlines()[0]
            msg = (
                f"The weights in {str(directory)!r} do not fit this version's {cls.__name__} "
                f"({first_line}): the model was saved by another gexbert_sc version or model "
                "class. Load it with the version and class that saved it, or train anew."
            )
            raise ValueError(msg) from error
        if manifest is not None:
            check_loaded(directory, manifest, model._saved_description())
        model._apply_legacy_hparams(saved["attr_dict"]["init_params_"]["non_kwargs"])
        return model

    def _apply_legacy_hparams(self, saved_params: dict[str, Any]) -> None:
        """Give a model saved without a newer hyper-parameter the value it was trained with.

        ``saved_params`` are the constructor arguments stored in the saved model. The module
        reads the newer ones as plain attributes, so setting them after construction
        reproduces the saved model's outputs exactly.
        """
        for name, value in LEGACY_HPARAMS.items():
            if name not in saved_params and name in self.init_params_["non_kwargs"]:
                setattr(self.module, name, value)
                self.init_params_["non_kwargs"][name] = value


def _saved_names(prefix: str | None) -> dict[str, str]:
    """Return the names of a save's files: ``model``, ``anndata``, ``mudata``, ``manifest``."""
    prefix = prefix or ""
    return {
        "model": f"{prefix}{SAVE_KEYS.MODEL_FNAME}",
        "anndata": f"{prefix}{SAVE_KEYS.ADATA_FNAME}",
        "mudata": f"{prefix}{SAVE_KEYS.MDATA_FNAME}",
        "manifest": f"{prefix}{MANIFEST_NAME}",
    }


def _registered_genes(registry: dict) -> list[str]:
    """Return the gene names of a registry's expression field, in order."""
    state = registry["field_registries"][REGISTRY_KEYS.X_KEY]["state_registry"]
    return list(state["column_names"])
