"""The user-facing GexBERT model."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scvi
import torch
from scvi.data import AnnDataManager
from scvi.data.fields import (
    CategoricalObsField,
    LayerField,
    MuDataCategoricalObsField,
    MuDataLayerField,
)
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin
from scvi.utils import setup_anndata_dsp

from gexbert_sc._constants import MODULE_KEYS, REGISTRY_KEYS
from gexbert_sc.data import check_var_names, fit_expression_statistics, resolve_input_scale
from gexbert_sc.data._input_scale import InputScale, check_input_scale
from gexbert_sc.data._matrix import registered_values
from gexbert_sc.data._normalization import to_input_scale
from gexbert_sc.data._validation import (
    check_expression_matrix,
    check_missing_layer,
    check_obs_key,
    expression_data,
    registered_matrix,
)
from gexbert_sc.model._heap import release_free_heap
from gexbert_sc.model._memory import batch_size_for_budget
from gexbert_sc.module import GexBERTModule
from gexbert_sc.train import GexBERTTrainingPlan, Precision, autocast_context, resolve_precision

if TYPE_CHECKING:
    import numpy.typing as npt
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)

_LOADING = contextvars.ContextVar("gexbert_loading", default=False)


def default_max_epochs(n_obs: int) -> int:
    """Epochs for ``train()`` when none are given: about 40k sample passes, 10–100 epochs.

    Parameters
    ----------
    n_obs
        Number of samples in the training AnnData.

    Returns
    -------
    The number of epochs.
    """
    return int(np.clip(round(40_000 / max(n_obs, 1)), 10, 100))


@contextlib.contextmanager
def _scvi_seed(seed: int) -> Iterator[None]:
    """Set ``scvi.settings.seed`` for the duration of a call, then restore it."""
    previous = scvi.settings.seed
    scvi.settings.seed = seed
    try:
        yield
    finally:
        scvi.settings.seed = previous


class GexBERT(UnsupervisedTrainingMixin, BaseModelClass):
    """GexBERT masked-expression transformer autoencoder :cite:p:`Jiang2025`.

    Genes are tokens (gene embedding + binned expression-level embedding; a learned *missing*
    embedding for unknown values). The encoder reads ``[CLS]`` plus a random subset of observed
    genes; a cross-attention decoder restores hidden genes. The ``[CLS]`` output is the sample
    embedding (:meth:`get_latent_representation`); the decoder restores any gene of the
    vocabulary (:meth:`get_imputed_expression`).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`. Per-gene statistics (library shares,
        quantile bin edges, means) are fitted on it: pass training samples only.
    registry
        Registry of a saved model (used by :meth:`load` with ``adata=False``).
    d_model
        Token width. Width matters more than depth for restoration.
    n_layers
        Encoder blocks.
    n_decoder_layers
        Cross-attention decoder blocks.
    n_heads
        Attention heads (must divide ``d_model``).
    n_levels
        Expression levels including the reserved zero level.
    n_context
        Observed genes per sample per training step (attention is quadratic in this).
    n_inference_context
        Observed genes per sample read by the getters.
    mask_ratio
        Fraction of the training context hidden and restored.
    bottleneck_weight
        Weight of the restoration loss computed from ``[CLS]`` alone; it is what makes
        ``X_gexbert`` a good sample summary. 0 trains by restoration only.
    dropout
        Dropout rate.
    seed
        Seed of weight initialisation and training. ``None`` uses ``scvi.settings.seed`` if it
        is set, else 0: a model is reproducible by default.

    Examples
    --------
    >>> import gexbert_sc
    >>> adata = gexbert_sc.datasets.pbmc68k()
    >>> gexbert_sc.GexBERT.setup_anndata(adata)
    >>> model = gexbert_sc.GexBERT(adata)
    >>> model.train(max_epochs=2)
    >>> gexbert_sc.tl.embed(adata, model)
    >>> adata.obsm["X_gexbert"].shape
    (700, 128)
    """

    _module_cls = GexBERTModule
    _training_plan_cls = GexBERTTrainingPlan

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        *,
        d_model: int = 128,
        n_layers: int = 2,
        n_decoder_layers: int = 1,
        n_heads: int = 4,
        n_levels: int = 32,
        n_context: int = 256,
        n_inference_context: int = 1024,
        mask_ratio: float = 0.3,
        bottleneck_weight: float = 1.0,
        dropout: float = 0.0,
        seed: int | None = None,
    ):
        super().__init__(adata, registry)
        _check_positive(
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            n_context=n_context,
            n_inference_context=n_inference_context,
        )
        if n_levels < 3:
            msg = f"`n_levels` must be at least 3 (zero level + 2 bins), got {n_levels}."
            raise ValueError(msg)
        if not 0 < mask_ratio < 1:
            msg = f"`mask_ratio` must be in (0, 1), got {mask_ratio}."
            raise ValueError(msg)
        if seed is None:
            seed = scvi.settings.seed if scvi.settings.seed is not None else 0
        self.seed_ = int(seed)
        statistics = {}
        is_counts = False
        if adata is not None and not _LOADING.get():
            is_counts, statistics = self._fit_statistics(n_levels, d_model)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed_)
            self.module = self._module_cls(
                n_vars=self.summary_stats.n_vars,
                n_batch=self.summary_stats.n_batch,
                d_model=d_model,
                n_layers=n_layers,
                n_decoder_layers=n_decoder_layers,
                n_heads=n_heads,
                n_levels=n_levels,
                n_context=n_context,
                n_inference_context=n_inference_context,
                mask_ratio=mask_ratio,
                bottleneck_weight=bottleneck_weight,
                dropout=dropout,
                is_counts=is_counts,
                **statistics,
            )
        self.precision_ = "32-true"
        self._model_summary_string = (
            f"GexBERT model with d_model={d_model}, n_layers={n_layers}, n_heads={n_heads}, "
            f"n_levels={n_levels}, n_context={n_context}, genes={self.summary_stats.n_vars}, "
            f"input={'counts' if is_counts else 'log'}"
        )
        self.init_params_ = self._get_init_params(locals())

    def _fit_statistics(self, n_levels: int, d_model: int) -> tuple[bool, dict[str, torch.Tensor]]:
        manager = self.adata_manager
        matrix, missing = registered_values(manager)
        input_scale = manager.registry["setup_args"]["input_scale"]
        is_counts = resolve_input_scale(matrix, input_scale) == "counts"
        stats = fit_expression_statistics(
            matrix,
            missing,
            is_counts,
            n_levels,
            np.asarray(self.var_names),
            n_axes=d_model,
            seed=0,
        )
        return is_counts, {
            "gene_share": torch.from_numpy(stats.gene_share),
            "bin_edges": torch.from_numpy(stats.bin_edges),
            "gene_mean": torch.from_numpy(stats.gene_mean),
            "principal_axes": torch.from_numpy(stats.principal_axes),
        }

    # ------------------------------------------------------------------ setup
    @classmethod
    @setup_anndata_dsp.dedent
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        missing_layer: str | None = None,
        input_scale: InputScale = "auto",
        **kwargs,
    ) -> None:
        """%(summary)s.

        Parameters
        ----------
        %(param_adata)s
        layer
            Layer with expression values; ``None`` uses ``adata.X``. Dense or sparse (CSR),
            counts or log-normalised values. NaN entries mean *missing* (not zero).
        %(param_batch_key)s
        %(param_labels_key)s
        missing_layer
            Optional boolean layer, ``True`` where a value is missing (an alternative to NaN).
        input_scale
            ``"counts"`` (library-size normalised and log1p'd inside the model), ``"log"``
            (used as given) or ``"auto"`` (counts if every value is a non-negative integer).
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields` (used by ``load``).
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        _check_expression_setup(adata, layer, missing_layer, input_scale)
        check_obs_key(adata, batch_key, "batch_key")
        check_obs_key(adata, labels_key, "labels_key")
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
        ]
        if missing_layer is not None:
            fields.append(LayerField(REGISTRY_KEYS.MISSING_KEY, missing_layer, is_count_data=False))
        cls._register(adata, fields, setup_method_args, kwargs)

    @classmethod
    def setup_mudata(
        cls,
        mdata: MuData,
        rna_layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        missing_layer: str | None = None,
        input_scale: InputScale = "auto",
        modalities: dict[str, str] | None = None,
        **kwargs,
    ) -> None:
        """Set up a :class:`~mudata.MuData` whose expression is one modality.

        Every sample of ``mdata`` must be a sample of the expression modality. Embeddings are
        written to the global ``mdata.obsm``, imputed values to the modality's ``layers``.

        Parameters
        ----------
        mdata
            MuData object.
        rna_layer
            Layer of the expression modality holding the values; ``None`` uses its ``X``.
            Same conventions as ``layer`` in :meth:`setup_anndata` (NaN = missing).
        batch_key
            ``obs`` column of the batch (of ``mdata.obs`` unless ``modalities`` names a
            modality for ``"batch_key"``).
        labels_key
            ``obs`` column of the labels (same lookup as ``batch_key``).
        missing_layer
            Optional boolean layer of the expression modality, ``True`` where missing.
        input_scale
            ``"counts"``, ``"log"`` or ``"auto"``, as in :meth:`setup_anndata`.
        modalities
            Maps argument names to modalities; ``"rna_layer"`` is required, e.g.
            ``{"rna_layer": "rna"}``.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields` (used by ``load``).

        Examples
        --------
        >>> import gexbert_sc, mudata
        >>> mdata = mudata.MuData({"rna": gexbert_sc.datasets.pbmc68k()})
        >>> gexbert_sc.GexBERT.setup_mudata(mdata, modalities={"rna_layer": "rna"})
        >>> model = gexbert_sc.GexBERT(mdata, d_model=32)
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        if not modalities or "rna_layer" not in modalities:
            msg = (
                "`modalities` must name the expression modality, e.g. "
                f"`modalities={{'rna_layer': 'rna'}}`; got {modalities!r}."
            )
            raise ValueError(msg)
        modalities = cls._create_modalities_attr_dict(modalities, setup_method_args)
        rna = expression_data(mdata, setup_method_args["setup_args"])
        if rna.n_obs != mdata.n_obs:
            msg = (
                f"The expression modality {modalities.rna_layer!r} has {rna.n_obs} of the "
                f"MuData's {mdata.n_obs} samples; every sample must have expression values "
                "(mark unmeasured genes as NaN instead)."
            )
            raise ValueError(msg)

        def obs_of(argument: str) -> AnnData | MuData:
            name = modalities[argument]
            return mdata if name is None else mdata.mod[name]

        _check_expression_setup(rna, rna_layer, missing_layer, input_scale)
        check_obs_key(obs_of("batch_key"), batch_key, "batch_key")
        check_obs_key(obs_of("labels_key"), labels_key, "labels_key")
        fields = [
            MuDataLayerField(
                REGISTRY_KEYS.X_KEY,
                rna_layer,
                mod_key=modalities.rna_layer,
                is_count_data=False,
                mod_required=True,
            ),
            MuDataCategoricalObsField(
                REGISTRY_KEYS.BATCH_KEY, batch_key, mod_key=modalities.batch_key
            ),
            MuDataCategoricalObsField(
                REGISTRY_KEYS.LABELS_KEY, labels_key, mod_key=modalities.labels_key
            ),
        ]
        if missing_layer is not None:
            fields.append(
                MuDataLayerField(
                    REGISTRY_KEYS.MISSING_KEY,
                    missing_layer,
                    mod_key=modalities.rna_layer,
                    is_count_data=False,
                    mod_required=True,
                )
            )
        cls._register(mdata, fields, setup_method_args, kwargs)

    @classmethod
    def _register(cls, data: AnnData | MuData, fields: list, setup_method_args: dict, kwargs):
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        manager.register_fields(data, **kwargs)
        cls.register_manager(manager)

    @property
    def var_names(self) -> pd.Index:
        """Genes of the model's vocabulary, in order."""
        registry = self.registry_["field_registries"][REGISTRY_KEYS.X_KEY]["state_registry"]
        return pd.Index(registry["column_names"])

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True):
        if adata is not None:
            expression = expression_data(adata, self.registry_["setup_args"])
            check_var_names(expression.var_names, self.var_names)
        return super()._validate_anndata(adata, copy_if_view=copy_if_view)

    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, **kwargs) -> GexBERT:
        """Load a saved model, refusing data whose genes differ from the model's.

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
        ValueError
            If ``adata``'s genes differ from the model's or are in another order.
        """
        if adata is not None and adata is not False:
            registry = cls.load_registry(dir_path, prefix=kwargs.get("prefix"))
            saved = registry["field_registries"][REGISTRY_KEYS.X_KEY]["state_registry"]
            expression = expression_data(adata, registry["setup_args"])
            check_var_names(expression.var_names, saved["column_names"])
        token = _LOADING.set(True)
        try:
            return super().load(dir_path, adata=adata, **kwargs)
        finally:
            _LOADING.reset(token)

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int | None = None,
        *,
        batch_size: int = 64,
        lr: float = 1e-3,
        precision: Precision = "auto",
        early_stopping: bool = False,
        check_val_every_n_epoch: int = 1,
        train_size: float | None = None,
        validation_size: float | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ) -> None:
        """Pretrain by masked restoration.

        Parameters
        ----------
        max_epochs
            Passes over the training samples; ``None`` uses :func:`default_max_epochs`.
        batch_size
            Minibatch size.
        lr
            Peak AdamW learning rate (warm-up then cosine decay).
        precision
            ``"auto"`` (bf16 autocast where the hardware runs it natively, else fp32),
            ``"32-true"``, ``"bf16-mixed"`` or ``"16-mixed"``.
        early_stopping
            Stop when ``validation_loss`` stops improving (``early_stopping_patience`` etc.
            can be given in ``trainer_kwargs``).
        check_val_every_n_epoch
            Validation frequency; the validation loss is computed with masking on. Ignored
            when ``train_size=1.0`` (no validation samples).
        train_size, validation_size
            Split of the samples (:class:`scvi.dataloaders.DataSplitter`).
        accelerator, devices
            Passed to Lightning (``"cpu"``, ``"gpu"``, ``"auto"``; devices and strategies).
        plan_kwargs
            Passed to :class:`~gexbert_sc.train.GexBERTTrainingPlan`.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (e.g. ``enable_progress_bar=False``).
        """
        if max_epochs is None:
            max_epochs = default_max_epochs(self.adata.n_obs)
        on_gpu = accelerator in ("gpu", "cuda") or (
            accelerator == "auto" and torch.cuda.is_available()
        )
        self.precision_ = resolve_precision(precision, on_gpu)
        trainer_kwargs.setdefault("gradient_clip_val", 1.0)
        trainer_kwargs.setdefault("early_stopping_monitor", "validation_loss")
        logger.info("Training for %d epochs (precision %s).", max_epochs, self.precision_)
        # the getters leave the module in eval mode, and Lightning does not switch it back
        self.module.train()
        with _scvi_seed(self.seed_):
            super().train(
                max_epochs=max_epochs,
                batch_size=batch_size,
                early_stopping=early_stopping,
                train_size=train_size,
                validation_size=validation_size,
                accelerator=accelerator,
                devices=devices,
                plan_kwargs={"lr": lr, **(plan_kwargs or {})},
                # without validation samples Lightning refuses a validation frequency
                check_val_every_n_epoch=None if train_size == 1.0 else check_val_every_n_epoch,
                precision=self.precision_,
                **trainer_kwargs,
            )

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def _encoded_batches(
        self,
        adata: AnnData | None,
        indices: Sequence[int] | None,
        batch_size: int | None,
    ) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
        if not self.is_trained_:
            msg = "The model is not trained yet; run `model.train()` first."
            raise RuntimeError(msg)
        adata = self._validate_anndata(adata)
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        self.module.eval()
        with autocast_context(self.precision_, self.device):
            for tensors in loader:
                inputs = self.module._get_inference_input(tensors)
                yield tensors, self.module.inference(**inputs, apply_mask=False)
                release_free_heap()

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        *,
        memory_budget: int | str | None = None,
    ) -> npt.NDArray[np.float32]:
        """Return the ``[CLS]`` sample embedding.

        Parameters
        ----------
        adata
            AnnData with the model's genes (default: the training AnnData).
        indices
            Samples to embed (default: all).
        batch_size
            Samples per minibatch (default ``scvi.settings.batch_size``); the result does not
            depend on it.
        memory_budget
            Instead of ``batch_size``: bytes (or a string such as ``"2GB"``, ``"1.5GiB"``) that
            the activations of one minibatch may use; the largest batch size that fits is
            taken (see :doc:`/performance`).

        Returns
        -------
        ``(n_samples, d_model)`` float32 array.
        """
        batch_size = self._budget_batch_size(batch_size, memory_budget)
        # written batch by batch into one array: no per-batch objects outlive their batch
        n_rows = self._n_rows(adata, indices)
        latent = np.empty((n_rows, self.module.cls_token.shape[0]), dtype=np.float32)
        start = 0
        for _, out in self._encoded_batches(adata, indices, batch_size):
            z = out[MODULE_KEYS.Z_KEY].float().cpu().numpy()
            latent[start : start + len(z)] = z
            start += len(z)
        return latent

    def _n_rows(self, adata: AnnData | MuData | None, indices: Sequence[int] | None) -> int:
        """Return how many samples a getter returns: ``len(indices)``, else all of ``adata``."""
        if indices is not None:
            return len(indices)
        return (self.adata if adata is None else adata).n_obs

    def _budget_batch_size(
        self,
        batch_size: int | None,
        memory_budget: int | str | None,
        n_query: int = 0,
        query_chunk_size: int = 1024,
    ) -> int | None:
        """``batch_size``, or the largest batch size whose activations fit ``memory_budget``."""
        if memory_budget is None:
            return batch_size
        if batch_size is not None:
            msg = "Pass either `batch_size` or `memory_budget`, not both."
            raise ValueError(msg)
        params = self.init_params_["non_kwargs"]
        batch_size = batch_size_for_budget(
            memory_budget,
            n_vars=self.summary_stats.n_vars,
            d_model=params["d_model"],
            n_heads=params["n_heads"],
            n_context=self.module.n_inference_context,
            n_query=n_query,
            query_chunk_size=query_chunk_size,
        )
        logger.info("Batch size %d fits `memory_budget=%r`.", batch_size, memory_budget)
        return batch_size

    def _gene_indices(self, genes: Sequence[str] | None) -> np.ndarray:
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

    @torch.inference_mode()
    def get_imputed_expression(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        genes: Sequence[str] | None = None,
        *,
        keep_observed: bool = True,
        batch_size: int | None = None,
        query_chunk_size: int = 1024,
        memory_budget: int | str | None = None,
        return_numpy: bool = False,
    ) -> pd.DataFrame | npt.NDArray[np.float32]:
        """Restore expression values from each sample's observed genes.

        Parameters
        ----------
        adata
            AnnData with the model's genes (default: the training AnnData).
        indices
            Samples to restore (default: all).
        genes
            Genes to return (default: all genes of the model).
        keep_observed
            Return observed values unchanged and restore only missing ones (``True``), or
            return the model's restoration for every entry (``False``).
        batch_size
            Samples per minibatch.
        query_chunk_size
            Genes restored at once; bounds memory at ``batch_size × query_chunk_size`` values
            without changing the result.
        memory_budget
            Instead of ``batch_size``: bytes (or ``"2GB"``, ``"1.5GiB"``) that one minibatch's
            activations may use (see :doc:`/performance`).
        return_numpy
            Return an array instead of a DataFrame.

        Returns
        -------
        ``(n_samples, n_genes)`` float32 values on the input scale (counts in → expected
        counts out, scaled to each sample's library; log values in → log values out).
        """
        result, _, _ = self._impute(
            adata,
            indices,
            genes,
            keep_observed=keep_observed,
            batch_size=batch_size,
            query_chunk_size=query_chunk_size,
            memory_budget=memory_budget,
        )
        if return_numpy:
            return result
        adata = self._validate_anndata(adata)
        obs_names = adata.obs_names if indices is None else adata.obs_names[np.asarray(indices)]
        return pd.DataFrame(
            result, index=obs_names, columns=self.var_names[self._gene_indices(genes)]
        )

    @torch.inference_mode()
    def _impute(
        self,
        adata: AnnData | None,
        indices: Sequence[int] | None,
        genes: Sequence[str] | None,
        *,
        keep_observed: bool,
        batch_size: int | None,
        query_chunk_size: int,
        memory_budget: int | str | None = None,
        n_samples: int | None = None,
        seed: int = 0,
    ) -> tuple[npt.NDArray[np.float32], sp.csr_matrix, npt.NDArray[np.float32] | None]:
        """Return imputed values, the missing mask and the spread of restorations.

        The outputs are filled one minibatch at a time (no temporary of the full size). The
        spread (``None`` unless ``n_samples``) is the standard deviation, on the model's log
        scale, of the restorations from ``n_samples`` random contexts drawn with ``seed``; it
        is 0 on observed entries kept unchanged.
        """
        if query_chunk_size < 1:
            msg = f"`query_chunk_size` must be a positive integer, got {query_chunk_size}."
            raise ValueError(msg)
        gene_idx = torch.as_tensor(self._gene_indices(genes), device=self.device)
        batch_size = self._budget_batch_size(
            batch_size, memory_budget, len(gene_idx), query_chunk_size
        )
        values = np.empty((self._n_rows(adata, indices), len(gene_idx)), dtype=np.float32)
        spread = np.empty_like(values) if n_samples else None
        generator = torch.Generator(self.device).manual_seed(seed)
        missing, start = [], 0
        for tensors, out in self._encoded_batches(adata, indices, batch_size):
            restored = self._restore(out, gene_idx, query_chunk_size)
            block = to_input_scale(
                restored, out[MODULE_KEYS.SIZE_FACTOR_KEY], bool(self.module.input_is_counts)
            )
            observed = out[MODULE_KEYS.OBSERVED_KEY][:, gene_idx]
            if keep_observed:
                x = tensors[REGISTRY_KEYS.X_KEY].to(block.device)[:, gene_idx]
                block = torch.where(observed, x, block)
            stop = start + block.shape[0]
            values[start:stop] = block.cpu().numpy()
            missing.append(sp.csr_matrix(~observed.cpu().numpy()))
            if spread is not None:
                std = self._spread(
                    tensors, restored, gene_idx, query_chunk_size, n_samples, generator
                )
                if keep_observed:
                    std = torch.where(observed, 0.0, std)
                spread[start:stop] = std.cpu().numpy()
            start = stop
        return values, sp.vstack(missing, format="csr"), spread

    def _restore(
        self, out: dict[str, torch.Tensor], gene_idx: torch.Tensor, query_chunk_size: int
    ) -> torch.Tensor:
        """Log-scale restoration ``(B, G)`` of genes ``gene_idx``, a chunk of genes at a time."""
        chunks = [
            self.module.restore(
                out[MODULE_KEYS.MEMORY_KEY],
                out[MODULE_KEYS.MEMORY_PAD_KEY],
                chunk,
                out[MODULE_KEYS.BATCH_KEY],
            ).float()
            for chunk in gene_idx.split(query_chunk_size)
        ]
        return torch.cat(chunks, dim=1)

    def _spread(
        self,
        tensors: dict[str, torch.Tensor],
        center: torch.Tensor,
        gene_idx: torch.Tensor,
        query_chunk_size: int,
        n_samples: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Return the standard deviation of a minibatch's restorations over random contexts.

        Sums are taken of differences to ``center`` (the deterministic restoration), which
        keeps the one-pass variance accurate.
        """
        inputs = self.module._get_inference_input(tensors)
        total = torch.zeros_like(center, dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        for _ in range(n_samples):
            out = self.module.inference(**inputs, apply_mask=False, generator=generator)
            diff = (self._restore(out, gene_idx, query_chunk_size) - center).double()
            total += diff
            total_sq += diff.square()
        variance = (total_sq - total.square() / n_samples) / (n_samples - 1)
        return variance.clamp_min(0.0).sqrt().float()

    def get_gene_embeddings(self) -> pd.DataFrame:
        """Return the learned gene identity embeddings (genes × ``d_model``)."""
        weights = self.module.gene_emb.weight.detach().float().cpu().numpy()
        return pd.DataFrame(weights, index=self.var_names)


def _check_expression_setup(
    expression: AnnData, layer: str | None, missing_layer: str | None, input_scale: InputScale
) -> None:
    """Validate the expression arguments of a setup method before anything is registered."""
    check_expression_matrix(expression, layer)
    check_missing_layer(expression, missing_layer)
    check_input_scale(input_scale)
    if input_scale == "counts":
        resolve_input_scale(registered_matrix(expression, layer), input_scale)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int | np.integer) or value < 1:
            msg = f"`{name}` must be a positive integer, got {value!r}."
            raise ValueError(msg)
