"""Restoration getters shared by the GexBERT model family: imputed values, mask and spread."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from gexbert_sc._constants import MODULE_KEYS, QUERY_CHUNK_SIZE, REGISTRY_KEYS
from gexbert_sc.data._normalization import to_input_scale
from gexbert_sc.utils import check_positive_integers, is_integer

if TYPE_CHECKING:
    import numpy.typing as npt
    from anndata import AnnData
    from mudata import MuData

    from gexbert_sc.train import Precision


class Imputation(NamedTuple):
    """Result of :meth:`~gexbert_sc.GexBERT.impute_expression`: values, mask and spread."""

    #: ``(n_samples, n_genes)`` float32 values on the input scale.
    values: npt.NDArray[np.float32]
    #: ``(n_samples, n_genes)`` sparse bool, ``True`` where the input was missing.
    imputed: sp.csr_matrix
    #: ``(n_samples, n_genes)`` float32 spread of restorations over random contexts, on the
    #: model's log scale (``None`` unless ``n_samples`` was given).
    spread: npt.NDArray[np.float32] | None


class RestorationMixin:
    """Restore expression with the decoder; for models whose module has ``restore``."""

    @torch.inference_mode()
    def impute_expression(
        self,
        adata: AnnData | MuData | None = None,
        indices: Sequence[int] | None = None,
        genes: Sequence[str] | None = None,
        *,
        keep_observed: bool = True,
        batch_size: int | None = None,
        query_chunk_size: int = QUERY_CHUNK_SIZE,
        memory_budget: int | str | None = None,
        n_samples: int | None = None,
        seed: int = 0,
        precision: Precision = "32-true",
    ) -> Imputation:
        """Restore expression values, with the mask of imputed entries and optionally a spread.

        The outputs are filled one minibatch at a time (no temporary of the full size).

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
            Samples per minibatch (does not change the result).
        query_chunk_size
            Genes restored at once; bounds memory at ``batch_size × query_chunk_size`` values
            without changing the result.
        memory_budget
            Instead of ``batch_size``: bytes (or ``"2GB"``, ``"1.5GiB"``) that one minibatch's
            activations may use (:meth:`batch_size_for_memory`).
        n_samples
            If given (at least 2), also restore every sample from ``n_samples`` random
            contexts drawn as in training (random observed genes, some of them hidden) and
            return the standard deviation of these restorations: how much a value depends on
            which observed genes the model reads, **not** a calibrated interval.
        seed
            Seed of the random contexts (with ``n_samples``).
        precision
            As in :meth:`get_latent_representation` (default fp32).

        Returns
        -------
        An :class:`Imputation` ``(values, imputed, spread)``; ``spread`` is 0 on observed
        entries kept unchanged.
        """
        check_positive_integers(query_chunk_size=query_chunk_size)
        if n_samples is not None and (not is_integer(n_samples) or n_samples < 2):
            msg = f"`n_samples` must be an integer of at least 2, or None, got {n_samples!r}."
            raise ValueError(msg)
        gene_idx = torch.as_tensor(self._gene_indices(genes), device=self.device)
        batch_size = self._resolve_batch_size(
            batch_size, memory_budget, len(gene_idx), query_chunk_size
        )
        values = np.empty((self._n_rows(adata, indices), len(gene_idx)), dtype=np.float32)
        spread = np.empty_like(values) if n_samples else None
        ceiling = self.module.restoration_ceiling(gene_idx)
        generator = torch.Generator(self.device).manual_seed(seed)
        missing, read = [], []
        for rows, tensors, out in self._encoded_batches(adata, indices, batch_size, precision):
            observed = out[MODULE_KEYS.OBSERVED_KEY][:, gene_idx]
            # observed values kept unchanged need no restoration: decode the missing ones only
            columns = _columns_first(~observed) if keep_observed else None
            restored = self._restore(out, gene_idx, query_chunk_size, columns)
            block = to_input_scale(
                restored, out[MODULE_KEYS.SIZE_FACTOR_KEY], bool(self.module.input_is_counts)
            )
            block = torch.minimum(block, ceiling)
            if keep_observed:
                x = tensors[REGISTRY_KEYS.X_KEY].to(block.device)[:, gene_idx]
                block = torch.where(observed, x, block)
            values[rows] = block.cpu().numpy()
            missing.append(sp.csr_matrix(~observed.cpu().numpy()))
            read.append(rows)
            if spread is not None:
                std = self._spread(
                    tensors, restored, gene_idx, query_chunk_size, n_samples, generator, columns
                )
                if keep_observed:
                    std = torch.where(observed, 0.0, std)
                spread[rows] = std.cpu().numpy()
        # the blocks come in reading order (by context length): back to the samples' order
        imputed = sp.vstack(missing, format="csr")[np.argsort(np.concatenate(read))]
        return Imputation(values, imputed, spread)

    @torch.inference_mode()
    def get_imputed_expression(
        self,
        adata: AnnData | MuData | None = None,
        indices: Sequence[int] | None = None,
        genes: Sequence[str] | None = None,
        *,
        keep_observed: bool = True,
        batch_size: int | None = None,
        query_chunk_size: int = QUERY_CHUNK_SIZE,
        memory_budget: int | str | None = None,
        precision: Precision = "32-true",
        return_numpy: bool = False,
    ) -> pd.DataFrame | npt.NDArray[np.float32]:
        """Restore expression values from each sample's observed genes.

        Parameters
        ----------
        adata, indices, genes, keep_observed, batch_size, query_chunk_size, memory_budget, precision
            As in :meth:`impute_expression`.
        return_numpy
            Return an array instead of a DataFrame.

        Returns
        -------
        ``(n_samples, n_genes)`` float32 values on the input scale (counts in → expected
        counts out, scaled to each sample's library; log values in → log values out).
        """
        result = self.impute_expression(
            adata,
            indices,
            genes,
            keep_observed=keep_observed,
            batch_size=batch_size,
            query_chunk_size=query_chunk_size,
            memory_budget=memory_budget,
            precision=precision,
        )
        if return_numpy:
            return result.values
        data = self.adata if adata is None else adata
        obs_names = data.obs_names if indices is None else data.obs_names[np.asarray(indices)]
        return pd.DataFrame(
            result.values, index=obs_names, columns=self.var_names[self._gene_indices(genes)]
        )

    def _restore(
        self,
        out: dict[str, torch.Tensor],
        gene_idx: torch.Tensor,
        query_chunk_size: int,
        columns: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Log-scale restoration ``(B, G)`` of genes ``gene_idx``, a chunk of genes at a time.

        Each value is bounded to its gene's training range
        (:meth:`~gexbert_sc.module.ExpressionEncoder.bound_restoration`).

        With ``columns`` (``(B, K)`` positions in ``gene_idx``, per sample), only those
        entries are restored; the others are 0. A restored value does not depend on which
        other genes are decoded with it.
        """
        queries = gene_idx if columns is None else gene_idx[columns]
        chunks = [
            self.module.restore(
                out[MODULE_KEYS.MEMORY_KEY],
                out[MODULE_KEYS.MEMORY_PAD_KEY],
                chunk,
                out[MODULE_KEYS.BATCH_KEY],
                out.get(MODULE_KEYS.PROFILE_COEF_KEY),
            ).float()
            for chunk in queries.split(query_chunk_size, dim=-1)
        ]
        restored = torch.cat(chunks, dim=1)
        if columns is None:
            return self.module.bound_restoration(restored, gene_idx)
        restored = self.module.bound_restoration(restored, queries)
        return restored.new_zeros(len(restored), len(gene_idx)).scatter_(1, columns, restored)

    def _spread(
        self,
        tensors: dict[str, torch.Tensor],
        center: torch.Tensor,
        gene_idx: torch.Tensor,
        query_chunk_size: int,
        n_samples: int,
        generator: torch.Generator,
        columns: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the standard deviation of a minibatch's restorations over random contexts.

        Sums are taken of differences to ``center`` (the deterministic restoration), which
        keeps the one-pass variance accurate; with ``columns`` (as in :meth:`_restore`), 0
        outside them.
        """
        inputs = self.module._get_inference_input(tensors)
        encoding = {**self.module.sampling_encoding, "generator": generator}
        total = torch.zeros_like(center, dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        for _ in range(n_samples):
            out = self.module.inference(**inputs, encoding=encoding)
            restored = self._restore(out, gene_idx, query_chunk_size, columns)
            diff = (restored - center).double()
            total += diff
            total_sq += diff.square()
        variance = (total_sq - total.square() / n_samples) / (n_samples - 1)
        return variance.clamp_min(0.0).sqrt().float()


def _columns_first(wanted: torch.Tensor) -> torch.Tensor:
    """``(B, K)`` column positions of each row's ``True`` entries, ``K`` the most in a row.

    Rows with fewer than ``K`` are completed by other columns (whose restorations are
    discarded), so that the minibatch decodes ``K`` genes per sample instead of all.
    """
    n_wanted = max(int(wanted.sum(dim=1).max()), 1)
    return wanted.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :n_wanted]
