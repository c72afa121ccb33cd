"""Restoration getters shared by the GexBERT model family: imputed values, mask and spread."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from gexbert_sc._constants import MODULE_KEYS, QUERY_CHUNK_SIZE, REGISTRY_KEYS
from gexbert_sc.data._normalization import log_normalise, to_input_scale
from gexbert_sc.model.base._neighbours import (
    FIT_RATES,
    MAX_FIT_GENES,
    MAX_FIT_SAMPLES,
    MAX_REFERENCE_VALUES,
    N_NEIGHBOURS,
    Reference,
    best_blend_weight,
    blend_sums,
    blend_weight,
    nearest_references,
    neighbour_mean,
)
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


logger = logging.getLogger(__name__)


class RestorationMixin:
    """Restore expression with the decoder; for models whose module has ``restore``.

    Missing values are blended with the mean of the nearest training samples, with weights
    fitted at the end of :meth:`train` (:mod:`gexbert_sc.model.base._neighbours`).
    """

    #: Weights of the reference-neighbour blend by share of observed genes, fitted by
    #: :meth:`train` on validation samples (``None``: the decoder alone).
    neighbour_blend_: dict[str, list[float]] | None = None

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
        reference_blend: bool = True,
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
        reference_blend
            Blend each missing value's restoration with the mean of the sample's
            15 nearest samples of the model's AnnData (the training data, or the data the
            model was loaded with; found on the genes the sample has),
            with the weight fitted at the end of training for the sample's share of observed
            genes (``neighbour_blend_``; see :doc:`/design`, "Never below the first
            baseline"). ``False``: the decoder alone. No effect on a model saved by an
            earlier version (no fitted weights); a model loaded without its AnnData warns and
            restores with the decoder alone.

        Returns
        -------
        An :class:`Imputation` ``(values, imputed, spread)``; ``spread`` is 0 on observed
        entries kept unchanged and is the decoder's spread (without the blend).
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
        reference = self._neighbour_reference() if reference_blend else None
        missing, read = [], []
        for rows, tensors, out in self._encoded_batches(adata, indices, batch_size, precision):
            observed = out[MODULE_KEYS.OBSERVED_KEY][:, gene_idx]
            # observed values kept unchanged need no restoration: decode the missing ones only
            columns = _columns_first(~observed) if keep_observed else None
            restored = self._restore(out, gene_idx, query_chunk_size, columns)
            blended = restored
            if reference is not None:
                blended = self._blend_neighbours(tensors, restored, gene_idx, reference)
            block = to_input_scale(
                blended, out[MODULE_KEYS.SIZE_FACTOR_KEY], bool(self.module.input_is_counts)
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
        reference_blend: bool = True,
        return_numpy: bool = False,
    ) -> pd.DataFrame | npt.NDArray[np.float32]:
        """Restore expression values from each sample's observed genes.

        Parameters
        ----------
        adata, indices, genes, keep_observed, batch_size, query_chunk_size, memory_budget
            As in :meth:`impute_expression`.
        precision, reference_blend
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
            reference_blend=reference_blend,
        )
        if return_numpy:
            return result.values
        data = self.adata if adata is None else adata
        obs_names = data.obs_names if indices is None else data.obs_names[np.asarray(indices)]
        return pd.DataFrame(
            result.values, index=obs_names, columns=self.var_names[self._gene_indices(genes)]
        )

    def _blend_neighbours(
        self,
        tensors: dict[str, torch.Tensor],
        restored: torch.Tensor,
        gene_idx: torch.Tensor,
        reference: Reference,
    ) -> torch.Tensor:
        """Blend the missing entries of ``restored`` (log scale) with the neighbours' mean.

        In fp32 whatever the caller's autocast (the weights were fitted in fp32); a sample
        without observed genes has no neighbours and keeps the decoder's restoration.
        """
        inputs = self._inference_input(tensors, None)
        with torch.autocast(self.device.type, enabled=False):
            values, observed, _ = self.module.prepare_values(
                inputs[MODULE_KEYS.X_KEY].float(), inputs[MODULE_KEYS.MISSING_KEY]
            )
            neighbours = nearest_references(values.float(), observed, reference, N_NEIGHBOURS)
            mean, valid = neighbour_mean(reference, neighbours, gene_idx)
        fraction = observed.float().mean(dim=1)
        weight = blend_weight(fraction, self.neighbour_blend_)[:, None]
        blend = valid & ~observed[:, gene_idx] & (fraction > 0)[:, None]
        return torch.where(blend, (1 - weight) * restored.float() + weight * mean, restored)

    def _neighbour_reference(self) -> Reference | None:
        """Return the blend's reference samples (cached), or ``None`` where it does not apply."""
        if self.neighbour_blend_ is None:
            return None
        if self.adata is None:
            warnings.warn(
                "The model has no AnnData (loaded with `adata=False`): restoring with the "
                "decoder alone, without the reference-neighbour blend; load it with its "
                "training AnnData to blend, or pass `reference_blend=False`.",
                UserWarning,
                stacklevel=3,
            )
            return None
        key = (id(self.adata), self.adata.n_obs, self.device)
        cached = getattr(self, "_reference_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, self._reference_values(np.arange(self.adata.n_obs)))
            self._reference_cache = cached
        return cached[1]

    @torch.inference_mode()
    def _reference_values(self, indices: npt.NDArray[np.int64]) -> Reference:
        """Read samples ``indices`` of the model's AnnData on the model's log scale.

        Beyond ``MAX_REFERENCE_VALUES`` values, a seeded random subset of the samples.
        """
        limit = max(MAX_REFERENCE_VALUES // self.module.n_vars, N_NEIGHBOURS)
        if len(indices) > limit:
            rng = np.random.default_rng(self.seed_)
            indices = np.sort(rng.choice(indices, limit, replace=False))
        values = torch.zeros(len(indices), self.module.n_vars, device=self.device)
        observed = torch.zeros(values.shape, dtype=torch.bool, device=self.device)
        start = 0
        for tensors in self.minibatches(None, indices):
            inputs = self._inference_input(tensors, None)
            y, seen, _ = self.module.prepare_values(
                inputs[MODULE_KEYS.X_KEY], inputs[MODULE_KEYS.MISSING_KEY]
            )
            rows = slice(start, start + len(y))
            values[rows] = torch.where(seen, y.float(), 0.0)
            observed[rows] = seen
            start = rows.stop
        return Reference(values, observed)

    def _after_training(self) -> None:
        """Fit the reference-neighbour blend weights (:meth:`_fit_neighbour_blend`)."""
        self._reference_cache = None
        self._fit_neighbour_blend()

    @torch.inference_mode()
    def _fit_neighbour_blend(self, batch_size: int = 64) -> None:
        """Fit ``neighbour_blend_`` on validation samples with entries hidden at random.

        Each validation sample (at most ``MAX_FIT_SAMPLES``; without validation samples, a
        fifth of the samples) has ``FIT_RATES`` of its observed entries hidden in turn; the
        hidden entries are restored by the decoder and by the mean of the nearest other
        samples (the fitting samples excluded), and the weight minimising the squared error
        on the model's log scale is kept per rate, at the mean share of genes observed.
        """
        n_obs = self.adata.n_obs
        rng = np.random.default_rng(self.seed_)
        fitting = np.asarray(self.validation_indices if self.validation_indices is not None else [])
        if len(fitting) == 0:
            fitting = rng.permutation(n_obs)[: n_obs // 5]
        if len(fitting) > MAX_FIT_SAMPLES:
            fitting = rng.choice(fitting, MAX_FIT_SAMPLES, replace=False)
        others = np.setdiff1d(np.arange(n_obs), fitting)
        self.neighbour_blend_ = None
        if len(fitting) == 0 or len(others) == 0:
            logger.info("No samples to fit the reference-neighbour blend on: decoder alone.")
            return
        reference = self._reference_values(others)
        generator = torch.Generator(self.device).manual_seed(self.seed_)
        self.module.eval()
        fractions, weights = [], []
        for rate in FIT_RATES:
            sums, observed_shares = np.zeros(2), []
            for tensors in self.minibatches(None, np.sort(fitting), batch_size):
                part, share = self._hidden_restorations(tensors, rate, reference, generator)
                sums += part
                observed_shares.append(share)
            fractions.append(float(np.mean(np.concatenate(observed_shares))))
            weights.append(best_blend_weight(*sums))
        order = np.argsort(fractions)
        self.neighbour_blend_ = {
            "observed_fraction": [fractions[i] for i in order],
            "weight": [weights[i] for i in order],
        }
        logger.info(
            "Reference-neighbour blend weights %s at observed shares %s (%d samples).",
            [round(w, 3) for w in self.neighbour_blend_["weight"]],
            [round(f, 3) for f in self.neighbour_blend_["observed_fraction"]],
            len(fitting),
        )

    def _hidden_restorations(
        self,
        tensors: dict[str, torch.Tensor],
        rate: float,
        reference: Reference,
        generator: torch.Generator,
    ) -> tuple[tuple[float, float], np.ndarray]:
        """Hide ``rate`` of a minibatch's observed entries; restore some of them both ways.

        Up to ``MAX_FIT_GENES`` hidden entries per sample, drawn at random, are restored by
        the decoder and by the neighbours' mean (those that some neighbour observed).
        Returns their :func:`blend_sums` on the model's log scale, and each sample's share
        of observed genes after hiding.
        """
        inputs = self._inference_input(tensors, None)
        x, missing = inputs[MODULE_KEYS.X_KEY], inputs[MODULE_KEYS.MISSING_KEY]
        _, observed, _ = self.module.prepare_values(x, missing)
        draw = torch.rand(observed.shape, generator=generator, device=self.device)
        hidden = observed & (draw < rate)
        masked = torch.where(hidden, torch.nan, x)
        out = self.module.inference(masked, missing, inputs[MODULE_KEYS.BATCH_KEY], encoding={})
        # a random subset of each sample's hidden entries is scored
        priority = torch.where(hidden, draw, 2.0)
        n_scored = min(MAX_FIT_GENES, self.module.n_vars)
        columns = priority.topk(n_scored, dim=1, largest=False).indices
        scored = hidden.gather(1, columns)
        all_genes = torch.arange(self.module.n_vars, device=self.device)
        decoded = self._restore(out, all_genes, QUERY_CHUNK_SIZE, columns).gather(1, columns)
        values, seen, factors = self.module.prepare_values(masked, missing)
        neighbours = nearest_references(values.float(), seen, reference, N_NEIGHBOURS)
        mean, valid = neighbour_mean(reference, neighbours, all_genes)
        # the hidden values on the scale the masked sample is read on
        truth = log_normalise(x, factors) if self.module.input_is_counts else x
        use = scored & valid.gather(1, columns)
        sums = blend_sums(decoded[use], mean.gather(1, columns)[use], truth.gather(1, columns)[use])
        return sums, seen.float().mean(dim=1).cpu().numpy()

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
