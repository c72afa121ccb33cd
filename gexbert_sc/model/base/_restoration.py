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
from gexbert_sc.model.base._conformal import EntryFeatures, check_coverage
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
    """Result of :meth:`~gexbert_sc.GexBERT.impute_expression`: values, mask, spread, bounds."""

    #: ``(n_samples, n_genes)`` float32 values on the input scale.
    values: npt.NDArray[np.float32]
    #: ``(n_samples, n_genes)`` sparse bool, ``True`` where the input was missing.
    imputed: sp.csr_matrix
    #: ``(n_samples, n_genes)`` float32 spread of restorations over random contexts, on the
    #: model's log scale (``None`` unless ``n_samples`` was given).
    spread: npt.NDArray[np.float32] | None
    #: Lower and upper bounds of the calibrated intervals, on the input scale like
    #: ``values`` (``None`` unless ``coverage`` was given): ``(n_samples, n_genes)`` for one
    #: coverage, ``(n_coverages, n_samples, n_genes)`` for a sequence; equal to the value on
    #: observed entries kept unchanged.
    lower: npt.NDArray[np.float32] | None = None
    upper: npt.NDArray[np.float32] | None = None


class HiddenEntries(NamedTuple):
    """Entries of a minibatch hidden on purpose and restored (calibration and blend fits)."""

    #: ``(B, K)`` columns restored per sample, and which of them were hidden.
    columns: torch.Tensor
    scored: torch.Tensor
    #: ``(B, K)`` decoder restorations, neighbour means (``valid`` where some neighbour
    #: observed the gene) and true values, on the model's log scale.
    decoded: torch.Tensor
    mean: torch.Tensor
    valid: torch.Tensor
    truth: torch.Tensor
    #: ``(B,)`` share of the model's genes each sample has after hiding.
    share: torch.Tensor


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
        coverage: float | Sequence[float] | None = None,
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
        coverage
            Nominal coverage in (0, 1), or a sequence of them: also return split-conformal
            intervals ``lower``, ``upper`` that hold the true value of a missing entry with
            this probability, calibrated by gene and by the sample's share of observed genes
            (``calibration_``, fitted at the end of :meth:`train` or by :meth:`calibrate`;
            see :doc:`/uncertainty`). Needs ``reference_blend`` as calibrated.

        Returns
        -------
        An :class:`Imputation` ``(values, imputed, spread, lower, upper)``; ``spread`` is 0
        on observed entries kept unchanged and is the decoder's spread (without the blend).
        With ``keep_observed=False`` the observed entries get intervals by the same rule,
        which was calibrated on missing entries only.

        Raises
        ------
        ValueError
            If ``coverage`` is outside (0, 1), or the model has no calibration (see
            :meth:`calibrate`) or one fitted with another ``reference_blend``.
        """
        check_positive_integers(query_chunk_size=query_chunk_size)
        coverages = check_coverage(coverage)
        calibration = self._calibration_for(reference_blend) if coverages else None
        if n_samples is not None and (not is_integer(n_samples) or n_samples < 2):
            msg = f"`n_samples` must be an integer of at least 2, or None, got {n_samples!r}."
            raise ValueError(msg)
        gene_idx = torch.as_tensor(self._gene_indices(genes), device=self.device)
        batch_size = self._resolve_batch_size(
            batch_size, memory_budget, len(gene_idx), query_chunk_size
        )
        values = np.empty((self._n_rows(adata, indices), len(gene_idx)), dtype=np.float32)
        spread = np.empty_like(values) if n_samples else None
        bounds = np.empty((2, len(coverages), *values.shape), dtype=np.float32)
        ceiling = self.module.restoration_ceiling(gene_idx)
        generator = torch.Generator(self.device).manual_seed(seed)
        reference = self._neighbour_reference() if reference_blend else None
        if calibration is not None and calibration.reference_blend and reference is None:
            msg = (
                "The intervals were calibrated with the reference-neighbour blend, which this "
                "model cannot apply (no AnnData or no fitted weights): load it with its "
                "AnnData, or refit with `model.calibrate(..., reference_blend=False)`."
            )
            raise ValueError(msg)
        missing, read = [], []
        for rows, tensors, out in self._encoded_batches(adata, indices, batch_size, precision):
            observed = out[MODULE_KEYS.OBSERVED_KEY][:, gene_idx]
            size_factor = out[MODULE_KEYS.SIZE_FACTOR_KEY]
            # observed values kept unchanged need no restoration: decode the missing ones only
            columns = _columns_first(~observed) if keep_observed else None
            restored = self._restore(out, gene_idx, query_chunk_size, columns)
            blended, disagreement = restored, torch.zeros_like(restored)
            if reference is not None:
                blended, disagreement = self._blend_neighbours(
                    tensors, restored, gene_idx, reference
                )
            block = torch.minimum(self._to_input_scale(blended, size_factor), ceiling)
            if keep_observed:
                x = tensors[REGISTRY_KEYS.X_KEY].to(block.device)[:, gene_idx]
                block = torch.where(observed, x, block)
            values[rows] = block.cpu().numpy()
            if calibration is not None:
                share = out[MODULE_KEYS.OBSERVED_KEY].float().mean(dim=1)
                wanted = ~observed if keep_observed else torch.ones_like(observed)
                features = _entry_features(wanted, gene_idx, share, blended, disagreement)
                for i, pair in enumerate(calibration.intervals(features, coverages)):
                    for side, bound in enumerate(pair):
                        log_bound = blended.double().clone()
                        log_bound[wanted] = torch.as_tensor(bound, device=blended.device)
                        scaled = self._to_input_scale(log_bound, size_factor)
                        # an observed value kept unchanged is its own interval
                        scaled = torch.where(wanted, scaled, block)
                        limit = torch.minimum if side == 0 else torch.maximum
                        bounds[side, i, rows] = limit(scaled, block).cpu().numpy()
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
        if not coverages:
            return Imputation(values, imputed, spread)
        if np.ndim(coverage) == 0:
            bounds = bounds[:, 0]
        return Imputation(values, imputed, spread, bounds[0], bounds[1])

    def _to_input_scale(self, log_values: torch.Tensor, size_factor: torch.Tensor) -> torch.Tensor:
        """Log-scale values of a minibatch on the input scale (float32)."""
        return to_input_scale(log_values.float(), size_factor, bool(self.module.input_is_counts))

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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Blend the missing entries of ``restored`` (log scale) with the neighbours' mean.

        In fp32 whatever the caller's autocast (the weights were fitted in fp32); a sample
        without observed genes has no neighbours and keeps the decoder's restoration.
        Returns the blend and ``|restored - neighbour mean|`` where blended (0 elsewhere).
        """
        inputs = self._inference_input(tensors, None)
        with torch.autocast(self.device.type, enabled=False):
            values, observed, _ = self.module.prepare_values(
                inputs[MODULE_KEYS.X_KEY].float(), inputs[MODULE_KEYS.MISSING_KEY]
            )
            neighbours = nearest_references(values.float(), observed, reference, N_NEIGHBOURS)
            mean, valid = neighbour_mean(reference, neighbours, gene_idx)
        fraction = observed.float().mean(dim=1)
        return self._blend(restored, mean, valid & ~observed[:, gene_idx], fraction)

    def _blend(
        self, restored: torch.Tensor, mean: torch.Tensor, valid: torch.Tensor, share: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Blend restorations with neighbour means where ``valid`` (samples with genes).

        Parameters
        ----------
        restored, mean, valid
            ``(B, K)`` decoder restorations, neighbour means, and where to blend.
        share
            ``(B,)`` share of observed genes of each sample (picks the fitted weight).

        Returns
        -------
        ``(blended, disagreement)``: the blend, and ``|restored - mean|`` where blended.
        """
        weight = blend_weight(share, self.neighbour_blend_)[:, None]
        blend = valid & (share > 0)[:, None]
        blended = torch.where(blend, (1 - weight) * restored.float() + weight * mean, restored)
        return blended, torch.where(blend, (restored.float() - mean).abs(), 0.0)

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
        observed = self._observed(inputs)
        draw = torch.rand(observed.shape, generator=generator, device=self.device)
        entries = self._restore_hidden(inputs, observed & (draw < rate), draw, reference)
        use = entries.scored & entries.valid
        sums = blend_sums(entries.decoded[use], entries.mean[use], entries.truth[use])
        return sums, entries.share.cpu().numpy()

    def _observed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B, G)`` observed entries of a minibatch's inference inputs."""
        return self.module.prepare_values(
            inputs[MODULE_KEYS.X_KEY], inputs[MODULE_KEYS.MISSING_KEY]
        )[1]

    def _restore_hidden(
        self,
        inputs: dict[str, torch.Tensor],
        hidden: torch.Tensor,
        priority: torch.Tensor,
        reference: Reference,
        n_scored: int = MAX_FIT_GENES,
    ) -> HiddenEntries:
        """Restore ``hidden`` entries of a minibatch as a query missing them is restored.

        Parameters
        ----------
        inputs
            The minibatch's inference inputs.
        hidden
            ``(B, G)`` observed entries to hide.
        priority
            ``(B, G)`` random numbers: the ``n_scored`` hidden entries of smallest priority
            per sample are restored (by the decoder and by the neighbours' mean).
        reference
            The neighbours' reference samples (never the minibatch's own).
        n_scored
            Hidden entries restored per sample, at most.

        Returns
        -------
        The restored entries.
        """
        x, missing = inputs[MODULE_KEYS.X_KEY], inputs[MODULE_KEYS.MISSING_KEY]
        masked = torch.where(hidden, torch.nan, x)
        out = self.module.inference(masked, missing, inputs[MODULE_KEYS.BATCH_KEY], encoding={})
        ranked = torch.where(hidden, priority, 2.0)
        columns = ranked.topk(min(n_scored, self.module.n_vars), dim=1, largest=False).indices
        all_genes = torch.arange(self.module.n_vars, device=self.device)
        decoded = self._restore(out, all_genes, QUERY_CHUNK_SIZE, columns).gather(1, columns)
        values, seen, factors = self.module.prepare_values(masked, missing)
        neighbours = nearest_references(values.float(), seen, reference, N_NEIGHBOURS)
        mean, valid = neighbour_mean(reference, neighbours, all_genes)
        # the hidden values on the scale the masked sample is read on
        truth = log_normalise(x, factors) if self.module.input_is_counts else x
        return HiddenEntries(
            columns,
            hidden.gather(1, columns),
            decoded,
            mean.gather(1, columns),
            valid.gather(1, columns),
            truth.gather(1, columns).float(),
            seen.float().mean(dim=1),
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


def _entry_features(
    wanted: torch.Tensor,
    gene_idx: torch.Tensor,
    share: torch.Tensor,
    blended: torch.Tensor,
    disagreement: torch.Tensor,
) -> EntryFeatures:
    """Features of a minibatch's ``wanted`` entries (row-major, as ``tensor[wanted]``)."""
    rows, columns = wanted.nonzero(as_tuple=True)

    def flat(values: torch.Tensor) -> np.ndarray:
        return values.double().cpu().numpy()

    return EntryFeatures(
        gene_idx[columns].cpu().numpy().astype(np.int64),
        flat(share[rows]),
        flat(blended[wanted]),
        flat(disagreement[wanted]),
    )


def _columns_first(wanted: torch.Tensor) -> torch.Tensor:
    """``(B, K)`` column positions of each row's ``True`` entries, ``K`` the most in a row.

    Rows with fewer than ``K`` are completed by other columns (whose restorations are
    discarded), so that the minibatch decodes ``K`` genes per sample instead of all.
    """
    n_wanted = max(int(wanted.sum(dim=1).max()), 1)
    return wanted.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :n_wanted]
