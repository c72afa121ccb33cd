"""Calibrating the intervals of restored values on samples with entries hidden on purpose."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from gexbert_sc.model.base._conformal import (
    Calibration,
    EntryFeatures,
    fit_calibration,
    gene_statistics,
)
from gexbert_sc.utils import check_fraction, check_positive_integers

if TYPE_CHECKING:
    import numpy.typing as npt
    from anndata import AnnData
    from mudata import MuData

    from gexbert_sc.model.base._neighbours import Reference
    from gexbert_sc.model.base._restoration import HiddenEntries

#: Shares of each calibration sample's observed entries hidden at random (one scheme each).
CALIBRATION_RATES = (0.1, 0.3, 0.5, 0.7, 0.9)
#: Gene panels: each calibration sample keeps this many of its observed genes (at random).
CALIBRATION_PANEL_SIZES = (16, 64)
#: Calibration samples (a seeded subset beyond).
MAX_CALIBRATION_SAMPLES = 1000
#: Hidden entries restored per sample and scheme (a random subset beyond).
MAX_CALIBRATION_GENES = 256

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HidingScheme:
    """How a calibration hides entries: a share at random, or all but a panel of genes."""

    kind: str
    amount: float

    @property
    def name(self) -> str:
        """``"random 10 %"`` or ``"panel 16 genes"``."""
        if self.kind == "random":
            return f"random {self.amount * 100:g} %"
        return f"panel {int(self.amount)} genes"

    def hide(self, observed: torch.Tensor, draw: torch.Tensor) -> torch.Tensor:
        """``(B, G)`` observed entries to hide, given uniform random numbers ``draw``."""
        if self.kind == "random":
            return observed & (draw < self.amount)
        ranked = torch.where(observed, draw, 2.0)
        kth = ranked.kthvalue(int(self.amount), dim=1, keepdim=True).values
        return observed & (ranked > kth)


def hiding_schemes(rates: Sequence[float], panel_sizes: Sequence[int]) -> list[HidingScheme]:
    """Return the schemes of :meth:`CalibrationMixin.calibrate`, arguments checked."""
    for rate in rates:
        check_fraction("rates", rate, closed_low=False)
    check_positive_integers(**{f"panel_sizes[{i}]": s for i, s in enumerate(panel_sizes)})
    schemes = [HidingScheme("random", float(r)) for r in rates]
    schemes += [HidingScheme("panel", int(s)) for s in panel_sizes]
    if not schemes:
        msg = "`rates` and `panel_sizes` are both empty: no way to hide entries to calibrate on."
        raise ValueError(msg)
    return schemes


class CalibrationMixin:
    """Split-conformal intervals for :meth:`impute_expression`'s ``coverage``.

    Fitted at the end of :meth:`train` on the validation samples, refitted by
    :meth:`calibrate`; see :mod:`gexbert_sc.model.base._conformal` and :doc:`/uncertainty`.
    """

    #: The fitted calibration (:meth:`~gexbert_sc.model.base._conformal.Calibration.as_dict`),
    #: saved with the model; ``None`` before any.
    calibration_: dict | None = None

    def _after_training(self) -> None:
        """Fit what the parent fits, then the intervals on the validation samples (if any)."""
        super()._after_training()
        self.calibration_ = None
        if self.validation_indices is None or len(self.validation_indices) == 0:
            logger.info("No validation samples: intervals uncalibrated (see `calibrate`).")
            return
        self.calibrate()

    @torch.inference_mode()
    def calibrate(
        self,
        adata: AnnData | MuData | None = None,
        indices: Sequence[int] | None = None,
        *,
        rates: Sequence[float] = CALIBRATION_RATES,
        panel_sizes: Sequence[int] = CALIBRATION_PANEL_SIZES,
        max_samples: int = MAX_CALIBRATION_SAMPLES,
        batch_size: int = 64,
        reference_blend: bool = True,
        seed: int = 0,
    ) -> None:
        """Fit the intervals of ``impute_expression(coverage=...)`` on hidden entries.

        Each calibration sample has its observed entries hidden in turn by every scheme (a
        share at random per rate in ``rates``; all but a random panel per size in
        ``panel_sizes``); up to 256 hidden entries per sample and scheme are restored as a
        query missing them would be, and their residuals calibrate the intervals by gene and
        by missingness level (the share of observed genes). Refit on data shaped like your
        queries (their technology, their panel size) when these differ from the training
        data. Replaces ``calibration_`` (saved with the model).

        Parameters
        ----------
        adata
            Samples with the model's genes and known values (default: the model's AnnData,
            where ``indices`` defaults to the validation samples, which training never read).
            Never calibrate on training samples: their errors are smaller.
        indices
            Samples of ``adata`` to use (default: all; see ``adata``).
        rates
            Shares hidden at random, each in (0, 1).
        panel_sizes
            Observed genes kept per panel (positive integers; those of half the model's
            genes or more are left out).
        max_samples
            Calibration samples (a seeded random subset beyond).
        batch_size
            Samples per minibatch (does not change the result).
        reference_blend
            Calibrate the restorations blended with the reference neighbours (as
            ``impute_expression`` restores by default) or the decoder's alone.
        seed
            Seed of the hidden entries and of the subset.

        Raises
        ------
        ValueError
            If there are no calibration samples (a model trained without validation samples
            and no ``adata``), a rate or panel size is invalid, or no entry could be hidden
            (the samples have no observed values, or fewer than the panels keep).
        """
        # a panel of half the genes or more is what the random rates already cover
        schemes = hiding_schemes(rates, [s for s in panel_sizes if 2 * s < self.module.n_vars])
        check_positive_integers(max_samples=max_samples, batch_size=batch_size)
        samples, reference = self._calibration_samples(adata, indices, max_samples, seed)
        use_blend = reference_blend and self.neighbour_blend_ is not None
        generator = torch.Generator(self.device).manual_seed(seed)
        self.module.eval()
        parts: list[tuple[HiddenEntries, torch.Tensor, torch.Tensor]] = []
        shares: dict[str, list[np.ndarray]] = {scheme.name: [] for scheme in schemes}
        for tensors in self.minibatches(adata, samples, batch_size):
            inputs = self._inference_input(tensors, None)
            observed = self._observed(inputs)
            for scheme in schemes:
                draw = torch.rand(observed.shape, generator=generator, device=self.device)
                hidden = scheme.hide(observed, draw)
                entries = self._restore_hidden(
                    inputs, hidden, draw, reference, MAX_CALIBRATION_GENES
                )
                value, disagreement = entries.decoded, torch.zeros_like(entries.decoded)
                if use_blend:
                    value, disagreement = self._blend(
                        entries.decoded, entries.mean, entries.valid, entries.share
                    )
                parts.append((entries, value, disagreement))
                shares[scheme.name].append(entries.share[hidden.any(dim=1)].cpu().numpy())
        features, truth = _collect(parts)
        if len(truth) == 0:
            msg = (
                "No entry could be hidden in the calibration samples: they need observed "
                f"values, and more observed genes than the panels keep ({list(panel_sizes)})."
            )
            raise ValueError(msg)
        gene_mean, gene_scale = gene_statistics(features.gene, truth, self.module.n_vars)
        nonnegative = bool(self.module.input_is_counts) or bool(self.module.gene_min.min() >= 0)
        calibration = fit_calibration(
            features,
            truth,
            [np.concatenate(s) for s in shares.values()],
            gene_mean,
            gene_scale,
            floor=0.0 if nonnegative else -np.inf,
            reference_blend=use_blend,
            schemes=[scheme.name for scheme in schemes],
            n_samples=len(samples),
        )
        self.calibration_ = calibration.as_dict()
        logger.info(
            "Calibrated intervals on %d entries of %d samples (levels at observed shares %s).",
            len(truth),
            len(samples),
            [round(float(s), 3) for s in calibration.level_shares],
        )

    def _calibration_samples(
        self,
        adata: AnnData | MuData | None,
        indices: Sequence[int] | None,
        max_samples: int,
        seed: int,
    ) -> tuple[npt.NDArray[np.int64], Reference | None]:
        """Return the calibration samples, and the neighbours' reference without them."""
        own = adata is None or adata is self.adata
        if own and indices is None:
            indices = self.validation_indices
            if indices is None or len(indices) == 0:
                msg = (
                    f"The {type(self).__name__} model has no validation samples to calibrate "
                    "on (trained with `train_size=1.0` or loaded): pass `adata` (samples the "
                    "model was not trained on, with known values)."
                )
                raise ValueError(msg)
        n_obs = (self.adata if own else self.expression_of(adata)).n_obs
        samples = np.arange(n_obs) if indices is None else np.asarray(indices)
        if len(samples) == 0:
            msg = "`indices` is empty: calibration needs at least one sample."
            raise ValueError(msg)
        if len(samples) > max_samples:
            samples = np.random.default_rng(seed).choice(samples, max_samples, replace=False)
        samples = np.sort(samples)
        if self.neighbour_blend_ is None or self.adata is None:
            return samples, None
        if not own:
            return samples, self._neighbour_reference()
        # the calibration samples must not find themselves among their neighbours
        return samples, self._reference_values(np.setdiff1d(np.arange(n_obs), samples))

    def _calibration_for(self, reference_blend: bool) -> Calibration:
        """Return the stored calibration; refuse one missing or fitted for the other blend."""
        if self.calibration_ is None:
            msg = (
                f"The {type(self).__name__} model has no calibrated intervals: it was trained "
                "without validation samples or by an earlier version. Run "
                "`model.calibrate(adata)` on samples it was not trained on."
            )
            raise ValueError(msg)
        calibration = Calibration.from_dict(self.calibration_)
        wanted = reference_blend and self.neighbour_blend_ is not None
        if calibration.reference_blend != wanted:
            msg = (
                f"The intervals were calibrated with reference_blend={calibration.reference_blend}"
                f" but `reference_blend={reference_blend}` was asked: pass the same, or refit "
                f"with `model.calibrate(..., reference_blend={reference_blend})`."
            )
            raise ValueError(msg)
        return calibration


def _collect(
    parts: list[tuple[HiddenEntries, torch.Tensor, torch.Tensor]],
) -> tuple[EntryFeatures, npt.NDArray[np.float64]]:
    """Flatten the restored hidden entries of every minibatch and scheme."""
    genes, shares, values, disagreements, truths = [], [], [], [], []
    for entries, value, disagreement in parts:
        keep = entries.scored
        genes.append(entries.columns[keep])
        shares.append(entries.share[:, None].expand_as(keep)[keep])
        values.append(value[keep])
        disagreements.append(disagreement[keep])
        truths.append(entries.truth[keep])

    def flat(pieces: list[torch.Tensor], dtype: type) -> np.ndarray:
        return torch.cat(pieces).cpu().numpy().astype(dtype)

    features = EntryFeatures(
        flat(genes, np.int64),
        flat(shares, np.float64),
        flat(values, np.float64),
        flat(disagreements, np.float64),
    )
    return features, flat(truths, np.float64)
