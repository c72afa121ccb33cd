"""The base of the task models built on a pretrained GexBERT (classifier, survival)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import anndata as ad
import numpy as np
import pandas as pd
import torch

from gexbert_sc._constants import MODULE_KEYS
from gexbert_sc.model._gexbert import GexBERT
from gexbert_sc.model.base import (
    AttentionMixin,
    EncodingMixin,
    GexBERTBase,
    ImportanceMixin,
    TrainingMixin,
    check_architecture,
)
from gexbert_sc.utils import check_fraction, check_positive_integers, is_finite_number

if TYPE_CHECKING:
    from anndata import AnnData

    from gexbert_sc.train import Precision

#: Expression set-up arguments a task model takes over from its pretrained model.
EXPRESSION_SETUP_ARGS = ("layer", "batch_key", "missing_layer", "input_scale")


class GexBERTTaskModel(ImportanceMixin, AttentionMixin, EncodingMixin, TrainingMixin, GexBERTBase):
    """A head on the ``[CLS]`` embedding of a pretrained GexBERT, trained with panel dropout.

    Subclasses set ``_module_cls`` (a :class:`~gexbert_sc.module.GexBERTTaskModule`), their
    ``setup_anndata`` fields and a ``from_gexbert_model`` that calls
    :meth:`_from_pretrained`.

    Parameters
    ----------
    adata
        AnnData set up with the subclass's ``setup_anndata``.
    registry
        Registry of the pretrained or saved model: no statistics are fitted and the weights
        are loaded after.
    n_hidden
        Width of the head's hidden layer.
    head_dropout
        Dropout in the head.
    min_panel_genes
        Smallest panel kept by panel dropout.
    freeze_encoder
        Train the head only, on the frozen pretrained embedding; ``False`` fine-tunes the
        encoder too, at ``encoder_lr_scale`` times the head's learning rate.
    encoder_lr_scale
        Learning rate of the encoder relative to the head's when it is fine-tuned.
    seed
        Seed of the head's initialisation and of training.
    **architecture
        The pretrained model's hyper-parameters (:class:`~gexbert_sc.GexBERT`'s defaults for
        those not given).
    """

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        *,
        n_hidden: int = 128,
        head_dropout: float = 0.1,
        min_panel_genes: int = 16,
        freeze_encoder: bool = False,
        encoder_lr_scale: float = 0.1,
        seed: int | None = None,
        **architecture: Any,
    ):
        architecture = {**pretraining_defaults(), **architecture}
        check_architecture(**architecture, seed=seed)
        check_positive_integers(n_hidden=n_hidden, min_panel_genes=min_panel_genes)
        check_fraction("head_dropout", head_dropout, closed_low=True)
        if not is_finite_number(encoder_lr_scale) or encoder_lr_scale <= 0:
            msg = f"`encoder_lr_scale` must be a positive finite number, got {encoder_lr_scale!r}."
            raise ValueError(msg)
        head = {
            "n_hidden": n_hidden,
            "head_dropout": head_dropout,
            "min_panel_genes": min_panel_genes,
            "freeze_encoder": bool(freeze_encoder),
            "encoder_lr_scale": encoder_lr_scale,
        }
        super().__init__(adata, registry, seed=seed, module_kwargs={**architecture, **head})

    @classmethod
    def _task_data(cls, gexbert_model: GexBERTBase, adata: AnnData | None) -> AnnData:
        """Return the AnnData a task model is set up on: ``adata``, else the pretrained one's.

        Raises
        ------
        RuntimeError
            If the pretrained model is not trained.
        ValueError
            If ``adata`` is ``None`` and the pretrained model was set up with a MuData (a task
            model is set up with an AnnData).
        """
        gexbert_model._check_if_trained(warn=False)
        if adata is not None:
            return adata
        if not isinstance(gexbert_model.adata, ad.AnnData):
            msg = (
                f"The pretrained model was set up with a {type(gexbert_model.adata).__name__}; "
                f"a {cls.__name__} is set up with an AnnData: pass `adata=`, e.g. the "
                "expression modality with the batch and task columns in its `obs`."
            )
            raise ValueError(msg)
        return gexbert_model.adata

    @classmethod
    def _setup_on_pretrained(
        cls, gexbert_model: GexBERTBase, adata: AnnData, **task_setup: Any
    ) -> None:
        """Set up the data of a task model as the pretrained model read its own data.

        The pretrained model's layer, missing layer, batch column and scale are used, and its
        batch codes are transferred (as ``SCANVI.from_scvi_model`` does through the
        registry): the batch embedding is indexed by them, so data holding some of the
        batches, or others in equal number, must not get codes of their own.

        Parameters
        ----------
        gexbert_model
            The trained pretrained model.
        adata
            AnnData of the task (:meth:`_task_data`).
        **task_setup
            The task's own ``setup_anndata`` arguments (labels, survival columns).

        Raises
        ------
        ValueError
            If ``adata`` holds batches the pretrained model never saw, or values on another
            scale than its training data. Every check runs before ``adata`` is touched.
        KeyError
            If ``adata`` lacks the batch column or a layer the pretrained model reads.
        """
        if adata is not gexbert_model.adata:
            gexbert_model.reading_view(adata)  # the batch column, layers and batches
            gexbert_model._check_query_values(adata)
        setup = {key: gexbert_model.expression_setup[key] for key in EXPRESSION_SETUP_ARGS}
        cls.setup_anndata(
            adata, **task_setup, **setup, source_registry=gexbert_model.batch_registry()
        )

    def _head_outputs(
        self,
        adata: AnnData | None,
        indices: Sequence[int] | None,
        batch_size: int | None,
        memory_budget: int | str | None,
        precision: Precision,
    ) -> tuple[np.ndarray, pd.Index]:
        """Return the head's ``(n_samples, n_outputs)`` float64 outputs and the samples' names.

        The outputs are read on the fixed inference context, in the order of the names.
        """
        batch_size = self._resolve_batch_size(batch_size, memory_budget)
        read = self._read_samples(adata, indices, batch_size, precision)
        return read.head, self._sample_names(adata, indices)

    def _sample_names(self, adata: AnnData | None, indices: Sequence[int] | None) -> pd.Index:
        """Names of the samples a getter reads, in its output order."""
        data = self.adata if adata is None else adata
        return data.obs_names if indices is None else data.obs_names[np.asarray(indices)]

    def _read_samples(
        self,
        adata: AnnData | None,
        indices: Sequence[int] | None,
        batch_size: int,
        precision: Precision,
        *,
        genes_read: np.ndarray | None = None,
        with_panels: bool = False,
        values_of: np.ndarray | None = None,
    ) -> SamplesRead:
        """Read samples on the fixed inference context: head outputs, embedding, panels, values.

        Parameters
        ----------
        adata, indices, batch_size, precision
            As in :meth:`_head_outputs` (``batch_size`` resolved).
        genes_read
            Boolean mask over the model's genes: read only these (the others as missing).
        with_panels
            Also return which set of genes each sample has (one id per sample, each distinct
            set once: no ``samples × genes`` array).
        values_of
            Also return the samples' values of these gene positions on the model's log
            scale (NaN where missing).

        Returns
        -------
        A :class:`SamplesRead`, one row per sample in the order asked for.
        """
        n_rows = self._n_rows(adata, indices)
        head = np.empty((n_rows, self.module.head.n_outputs), dtype=np.float64)
        z = np.empty((n_rows, self.module.d_model), dtype=np.float32)
        panel_of = np.empty(n_rows, dtype=np.int64) if with_panels else None
        panel_ids: dict[bytes, int] = {}
        values = None
        if values_of is not None:
            values = np.empty((n_rows, len(values_of)), dtype=np.float32)
            columns = torch.as_tensor(values_of, device=self.device)
        with torch.inference_mode():
            batches = self._encoded_batches(
                adata, indices, batch_size, precision, genes_read=genes_read
            )
            for rows, tensors, out in batches:
                embedding = out[MODULE_KEYS.Z_KEY]
                head[rows] = self.module.head(embedding).double().cpu().numpy()
                z[rows] = embedding.float().cpu().numpy()
                seen = out[MODULE_KEYS.OBSERVED_KEY]
                if panel_of is not None:
                    packed = np.packbits(seen.cpu().numpy(), axis=1)
                    unique, inverse = np.unique(packed, axis=0, return_inverse=True)
                    ids = [panel_ids.setdefault(row.tobytes(), len(panel_ids)) for row in unique]
                    panel_of[rows] = np.asarray(ids)[inverse.ravel()]
                if values is not None:
                    inputs = self._inference_input(tensors, genes_read)
                    y = self.module.prepare_values(
                        inputs[MODULE_KEYS.X_KEY], inputs[MODULE_KEYS.MISSING_KEY]
                    )[0]
                    block = torch.where(seen, y.float(), torch.nan)[:, columns]
                    values[rows] = block.cpu().numpy()
        panels = None
        if panel_of is not None:
            n_bytes = -(-self.module.n_vars // 8)
            packed = np.frombuffer(b"".join(panel_ids), dtype=np.uint8).reshape(-1, n_bytes)
            panels = np.unpackbits(packed, axis=1, count=self.module.n_vars).astype(bool)
        return SamplesRead(head, z, panel_of, panels, values)


class SamplesRead(NamedTuple):
    """What :meth:`GexBERTTaskModel._read_samples` returns, one row per sample."""

    #: ``(n, n_outputs)`` float64 head outputs (logits, risks).
    head: np.ndarray
    #: ``(n, d_model)`` float32 ``[CLS]`` embeddings.
    z: np.ndarray
    #: ``(n,)`` row of ``panels`` each sample has (``with_panels``; else None).
    panel_of: np.ndarray | None
    #: ``(n_panels, n_genes)`` bool: the distinct sets of genes read (or None).
    panels: np.ndarray | None
    #: ``(n, len(values_of))`` float32 values on the model's log scale, NaN where missing
    #: (or None).
    values: np.ndarray | None


def pretraining_defaults() -> dict[str, Any]:
    """Return the hyper-parameters of :class:`~gexbert_sc.GexBERT` and their defaults."""
    signature = inspect.signature(GexBERT.__init__)
    return {
        name: parameter.default
        for name, parameter in signature.parameters.items()
        if parameter.kind is parameter.KEYWORD_ONLY and name != "seed"
    }
