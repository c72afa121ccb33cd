"""Minibatch loop and encoder getters shared by the GexBERT model family."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from scvi.data._constants import _SCVI_UUID_KEY

from gexbert_sc._constants import MODULE_KEYS, QUERY_CHUNK_SIZE
from gexbert_sc.data._input_scale import check_query_values
from gexbert_sc.data._validation import matrix_name, registered_matrix
from gexbert_sc.model.base._heap import release_free_heap
from gexbert_sc.model.base._memory import batch_size_for_budget
from gexbert_sc.train import Precision, autocast_context, resolve_precision

if TYPE_CHECKING:
    import numpy.typing as npt
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)


class EncodingMixin:
    """Minibatches, memory budgets and the ``[CLS]`` embedding, for every GexBERT model.

    Every getter runs the module in eval mode on the fixed, deterministic inference context
    in fp32 unless ``precision`` asks for reduced precision: the outputs do not depend on the
    batch size, chunk size, sample order or memory budget, nor on the CPU or GPU they run on
    (beyond float rounding, below 1e-5). Reduced precision is faster where the hardware has
    it, at a documented cost in accuracy (see :doc:`/performance`).
    """

    def minibatches(
        self,
        adata: AnnData | MuData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Yield the registered tensors of ``adata`` one minibatch at a time, in order.

        Parameters
        ----------
        adata
            Data with the model's genes (default: the model's AnnData).
        indices
            Samples to read (default: all).
        batch_size
            Samples per minibatch (default ``scvi.settings.batch_size``).

        Yields
        ------
        Dicts of tensors keyed by :data:`~gexbert_sc._constants.REGISTRY_KEYS`.
        """
        view = None
        if adata is not None and adata is not self.adata:
            adata = view = self.reading_view(adata)
        adata = self._validate_anndata(adata)
        if view is not None:
            self._check_query_values(self.expression_of(view))
        try:
            yield from self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        finally:
            # a view is new at every call: drop the manager scvi-tools transferred to it,
            # which would keep it (and the query's matrices) alive in the per-model store
            # (`deregister_manager` only knows managers made by `setup_anndata`)
            if view is not None:
                store = self._per_instance_manager_store.get(self.id, {})
                store.pop(view.uns.get(_SCVI_UUID_KEY), None)

    def _check_query_values(self, adata: AnnData) -> None:
        """Refuse a query with infinite values, or on another scale than the training data.

        Parameters
        ----------
        adata
            Query AnnData holding the registered layer (or ``X``).

        Raises
        ------
        ValueError
            See :func:`gexbert_sc.data._input_scale.check_query_values`.
        """
        layer = self.expression_setup["layer"]
        check_query_values(
            registered_matrix(adata, layer), bool(self.module.input_is_counts), matrix_name(layer)
        )

    def batch_size_for_memory(
        self,
        memory_budget: int | str,
        *,
        n_query: int = 0,
        query_chunk_size: int = QUERY_CHUNK_SIZE,
    ) -> int:
        """Largest inference batch size whose estimated activations fit ``memory_budget``.

        Parameters
        ----------
        memory_budget
            Bytes, or a string such as ``"2GB"`` or ``"1.5GiB"``.
        n_query
            Genes restored per sample (0 for the embedding only).
        query_chunk_size
            Genes decoded at once.

        Returns
        -------
        The batch size (see :doc:`/performance` for the estimate).
        """
        batch_size = batch_size_for_budget(
            memory_budget,
            n_vars=self.summary_stats.n_vars,
            d_model=self.module.d_model,
            n_heads=self.module.n_heads,
            n_context=self.module.n_inference_context,
            n_query=n_query,
            query_chunk_size=query_chunk_size,
        )
        logger.info("Batch size %d fits `memory_budget=%r`.", batch_size, memory_budget)
        return batch_size

    def _resolve_batch_size(
        self,
        batch_size: int | None,
        memory_budget: int | str | None,
        n_query: int = 0,
        query_chunk_size: int = QUERY_CHUNK_SIZE,
    ) -> int | None:
        """``batch_size``, or the one :meth:`batch_size_for_memory` picks for the budget."""
        if memory_budget is None:
            return batch_size
        if batch_size is not None:
            msg = "Pass either `batch_size` or `memory_budget`, not both."
            raise ValueError(msg)
        return self.batch_size_for_memory(
            memory_budget, n_query=n_query, query_chunk_size=query_chunk_size
        )

    @torch.inference_mode()
    def _encoded_batches(
        self,
        adata: AnnData | MuData | None,
        indices: Sequence[int] | None,
        batch_size: int | None,
        precision: Precision = "32-true",
        encoding: dict[str, Any] | None = None,
        genes_read: npt.NDArray[np.bool_] | None = None,
    ) -> Iterator[tuple[npt.NDArray[np.int64], dict[str, torch.Tensor], dict[str, Any]]]:
        """Yield ``(rows, tensors, encoder outputs)`` per minibatch, in eval mode.

        The encoding is the fixed inference context (with the ``encode_samples`` options in
        ``encoding``, e.g. ``{"attention": "cls"}``). Minibatches are *length buckets*: the
        samples are read in order of their context length (:meth:`inference_order`), so that
        a minibatch pads its contexts to a similar length; ``rows`` are the positions of the
        minibatch's samples among the samples asked for (``indices``, else all), where the
        caller writes their outputs. The autocast context of ``precision`` stays active while
        the caller works on a yielded batch. With ``genes_read`` (a boolean mask over the
        model's genes), the samples are read as if they had measured only those genes: the
        others are missing, exactly as in a query aligned to that panel.
        """
        self._check_if_trained()
        resolved = resolve_precision(precision, on_gpu=self.device.type == "cuda")
        order = self.inference_order(adata, indices, batch_size, genes_read)
        samples = np.arange(len(order)) if indices is None else np.asarray(indices)
        batches = self.minibatches(adata, samples[order], batch_size)
        self.module.eval()
        start = 0
        with autocast_context(resolved, self.device):
            for tensors in batches:
                inputs = self._inference_input(tensors, genes_read)
                out = self.module.inference(**inputs, encoding=encoding or {})
                rows = order[start : start + len(out[MODULE_KEYS.Z_KEY])]
                start += len(rows)
                yield rows, tensors, out
                release_free_heap()

    @torch.inference_mode()
    def inference_order(
        self,
        adata: AnnData | MuData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        genes_read: npt.NDArray[np.bool_] | None = None,
    ) -> npt.NDArray[np.int64]:
        """Order in which the getters read samples: by inference context length.

        Each sample's fixed context holds up to ``n_inference_context`` observed genes
        (:meth:`~gexbert_sc.module.ExpressionEncoder.inference_context_lengths`); a minibatch
        is padded to its longest context, so reading the samples from the shortest context to
        the longest makes minibatches of similar lengths and little padding. The outputs do
        not depend on the order: padding is masked.

        Parameters
        ----------
        adata, indices, batch_size
            As in :meth:`get_latent_representation` (``batch_size`` only bounds the memory of
            this pass).
        genes_read
            Boolean mask over the model's genes: read only these (the others as missing).

        Returns
        -------
        A permutation of ``range(n)`` for the ``n`` samples asked for (positions among
        ``indices``, else among all samples), shortest contexts first; ties keep their
        order.
        """
        lengths = []
        for tensors in self.minibatches(adata, indices, batch_size):
            inputs = self._inference_input(tensors, genes_read)
            lengths.append(
                self.module.inference_context_lengths(
                    inputs[MODULE_KEYS.X_KEY], inputs[MODULE_KEYS.MISSING_KEY]
                ).cpu()
            )
        return torch.cat(lengths).numpy().argsort(kind="stable")

    def _inference_input(
        self, tensors: dict[str, torch.Tensor], genes_read: npt.NDArray[np.bool_] | None
    ) -> dict[str, torch.Tensor | None]:
        """Return the module's inference input on the model's device.

        With ``genes_read`` (a boolean mask over the model's genes), the others are missing.
        """
        inputs = {
            key: None if value is None else value.to(self.device)
            for key, value in self.module._get_inference_input(tensors).items()
        }
        if genes_read is None:
            return inputs
        x = inputs[MODULE_KEYS.X_KEY]
        unread = torch.as_tensor(~genes_read, device=x.device).expand(len(x), -1)
        missing = inputs[MODULE_KEYS.MISSING_KEY]
        inputs[MODULE_KEYS.MISSING_KEY] = (
            unread.float() if missing is None else torch.maximum(missing.float(), unread.float())
        )
        return inputs

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | MuData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        *,
        memory_budget: int | str | None = None,
        precision: Precision = "32-true",
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
            taken (:meth:`batch_size_for_memory`).
        precision
            ``"32-true"`` (default: outputs independent of batch size and hardware),
            ``"bf16-mixed"``, ``"16-mixed"`` or ``"auto"`` (the fastest the hardware runs
            natively): reduced precision is faster on hardware that has it, and its outputs
            move by up to the tolerance stated in :doc:`/performance`.

        Returns
        -------
        ``(n_samples, d_model)`` float32 array.
        """
        batch_size = self._resolve_batch_size(batch_size, memory_budget)
        # written batch by batch into one array: no per-batch objects outlive their batch
        latent = np.empty((self._n_rows(adata, indices), self.module.d_model), dtype=np.float32)
        for rows, _, out in self._encoded_batches(adata, indices, batch_size, precision):
            latent[rows] = out[MODULE_KEYS.Z_KEY].float().cpu().numpy()
        return latent

    def get_gene_embeddings(self) -> pd.DataFrame:
        """Return the learned gene identity embeddings.

        Returns
        -------
        A DataFrame of genes (index: the model's genes) × ``d_model`` columns.
        """
        weights = self.module.gene_emb.weight.detach().float().cpu().numpy()
        return pd.DataFrame(weights, index=self.var_names)
