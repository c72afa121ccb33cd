"""Split-conformal intervals of restored values, adaptive and Mondrian by gene and missingness.

A restored entry's signed residual ``y - ŷ`` (on the model's log scale) is divided by a
difficulty ``σ`` the model has for free (:func:`difficulty`): the gene's typical error, the
sample's missingness level and share of observed genes, how far the decoder and the
reference neighbours disagree on the entry, and how far the restored value lies from the
gene's mean. The normalised
scores of entries hidden in calibration samples are sorted into *bins*: the gene at the
sample's missingness level (Mondrian by both), else the gene alone, else the level alone,
else all entries: an entry takes the finest bin that holds enough scores for the coverage
asked (:data:`MIN_BIN_ENTRIES`, and enough for a finite split-conformal quantile). Its
interval is ``ŷ + σ q_lo`` to ``ŷ + σ q_hi`` with ``q_lo`` and ``q_hi`` the bin's
split-conformal quantiles of the two tails (each holding ``(1 - coverage) / 2``), so skewed
errors give skewed intervals.

Each bin stores :data:`N_QUANTILES` quantiles of its scores and its count, so any coverage in
(0, 1) is served from the saved model without the scores themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from gexbert_sc.utils import check_fraction

#: Quantiles of the normalised scores stored per bin.
N_QUANTILES = 201
#: Fewest calibration entries a bin needs to give intervals of its own (else a coarser bin).
MIN_BIN_ENTRIES = 100
#: A level boundary lies between two calibration schemes whose median observed shares differ
#: by at least this factor (closer schemes share a level).
LEVEL_RATIO = 1.3
#: Bin families, finest first.
FAMILIES = ("gene_level", "level", "gene", "all")
#: The residual's floor inside the log of :func:`fit_difficulty`, as a share of the gene's scale.
RESIDUAL_FLOOR = 0.05


@dataclass(frozen=True)
class EntryFeatures:
    """What the model knows about restored entries (flat arrays of the same length)."""

    #: Gene (column of the model) of each entry.
    gene: npt.NDArray[np.int64]
    #: Share of the model's genes observed in the entry's sample.
    share: npt.NDArray[np.float64]
    #: The restored value on the model's log scale.
    value: npt.NDArray[np.float64]
    #: ``|decoder - neighbour mean|`` on the log scale (0 where no neighbour blend applies).
    disagreement: npt.NDArray[np.float64]


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration; :meth:`as_dict` is what a model stores (plain arrays)."""

    #: ``(G,)`` mean and scale of each gene's calibration values (log scale;
    #: :func:`gene_statistics`).
    gene_mean: npt.NDArray[np.float64]
    gene_scale: npt.NDArray[np.float64]
    #: Shared coefficients of the difficulty design and ``(G,)`` per-gene intercepts.
    coef: npt.NDArray[np.float64]
    intercept: npt.NDArray[np.float64]
    #: Range of each design column over the calibration entries: a query's design is
    #: clipped to it, so that the difficulty never extrapolates (e.g. ``exp`` of the square
    #: of a value far outside its gene's calibrated range).
    design_low: npt.NDArray[np.float64]
    design_high: npt.NDArray[np.float64]
    #: Observed shares separating the missingness levels (increasing) and each level's
    #: median calibrated share.
    level_edges: npt.NDArray[np.float64]
    level_shares: npt.NDArray[np.float64]
    #: Per family (:data:`FAMILIES`): ``(n_bins,)`` counts, and ``(n_full, N_QUANTILES)``
    #: quantiles of the normalised scores of the bins with at least
    #: :data:`MIN_BIN_ENTRIES` (bin ``b``'s are row ``slots[family][b]``; -1 for the others).
    counts: dict[str, npt.NDArray[np.int64]]
    slots: dict[str, npt.NDArray[np.int32]]
    quantiles: dict[str, npt.NDArray[np.float32]]
    #: Lower bound of every value (0 for non-negative data, else ``-inf``).
    floor: float
    #: Whether the restorations were blended with the reference neighbours.
    reference_blend: bool
    #: How the calibration entries were hidden, and how many samples they came from.
    schemes: list[str]
    n_samples: int

    def as_dict(self) -> dict[str, Any]:
        """Return the calibration as a dictionary of plain values and arrays."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Calibration:
        """Rebuild a calibration from :meth:`as_dict`'s dictionary."""
        return cls(**stored)

    @property
    def n_levels(self) -> int:
        """Missingness levels."""
        return len(self.level_shares)

    def levels(self, share: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Missingness level of samples with observed share ``share``."""
        return np.searchsorted(self.level_edges, np.asarray(share), side="right")

    def bin_indices(self, gene: npt.NDArray[np.int64], level: npt.NDArray[np.int64]) -> dict:
        """Each entry's bin in every family, finest first (:data:`FAMILIES`)."""
        index = {
            "gene_level": gene * self.n_levels + level,
            "level": level,
            "gene": gene,
            "all": np.zeros_like(gene),
        }
        return {family: index[family] for family in FAMILIES}

    def intervals(
        self, features: EntryFeatures, coverages: Sequence[float]
    ) -> list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
        """Lower and upper bounds (log scale) of entries at each of ``coverages``.

        Parameters
        ----------
        features
            The restored entries.
        coverages
            Nominal coverages, each in (0, 1).

        Returns
        -------
        One ``(lower, upper)`` pair of flat arrays per coverage; infinite where no bin holds
        enough scores.
        """
        level = self.levels(features.share)
        sigma = difficulty(self, features, level)
        bounds = []
        for coverage in coverages:
            q_lo, q_hi = self.offsets(features.gene, level, coverage)
            lower = np.maximum(features.value + sigma * q_lo, self.floor)
            upper = features.value + sigma * q_hi
            bounds.append((np.minimum(lower, features.value), np.maximum(upper, features.value)))
        return bounds

    def offsets(
        self, gene: npt.NDArray[np.int64], level: npt.NDArray[np.int64], coverage: float
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Return entries' normalised offsets: their finest sufficient bin's quantiles."""
        alpha = 1.0 - coverage
        q_lo = np.full(len(gene), -np.inf)
        q_hi = np.full(len(gene), np.inf)
        todo = np.ones(len(gene), dtype=bool)
        needed = max(MIN_BIN_ENTRIES, int(np.ceil(2.0 / alpha - 1.0)))
        for family, index in self.bin_indices(gene, level).items():
            n = self.counts[family][index]
            use = todo & (n >= needed)
            if use.any():
                grid = self.quantiles[family][self.slots[family][index[use]]].astype(np.float64)
                q_lo[use] = _order_statistic(grid, n[use], np.floor((n[use] + 1) * alpha / 2))
                q_hi[use] = _order_statistic(grid, n[use], np.ceil((n[use] + 1) * (1 - alpha / 2)))
            todo &= ~use
        return q_lo, q_hi


def check_coverage(coverage: float | Sequence[float] | None) -> list[float]:
    """Return the nominal coverages asked (empty for ``None``), checked to lie in (0, 1).

    Raises
    ------
    ValueError
        If a coverage is not a number in (0, 1).
    """
    if coverage is None:
        return []
    levels = [coverage] if np.ndim(coverage) == 0 else list(coverage)
    for level in levels:
        check_fraction("coverage", level, closed_low=False)
    if not levels:
        msg = "`coverage` is an empty sequence: give at least one level in (0, 1)."
        raise ValueError(msg)
    return [float(level) for level in levels]


def _order_statistic(
    grid: npt.NDArray[np.float64], n: npt.NDArray[np.int64], rank: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Return the ``rank``-th smallest of ``n`` scores (1-based) from their quantile ``grid``."""
    position = (np.clip(rank, 1, n) - 1) / np.maximum(n - 1, 1) * (grid.shape[1] - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, grid.shape[1] - 1)
    rows = np.arange(len(grid))
    share = position - below
    return (1 - share) * grid[rows, below] + share * grid[rows, above]


def difficulty_design(
    features: EntryFeatures,
    level: npt.NDArray[np.int64],
    n_levels: int,
    gene_mean: npt.NDArray,
    gene_scale: npt.NDArray,
) -> npt.NDArray[np.float64]:
    """Return the design of :func:`difficulty`.

    Columns: one per level past the first, the log share of observed genes, the log
    disagreement, the value's position in its gene's distribution and its square.
    """
    scale = gene_scale[features.gene]
    position = (features.value - gene_mean[features.gene]) / scale
    levels = (level[:, None] == np.arange(1, n_levels)[None, :]).astype(np.float64)
    continuous = [
        np.log(np.clip(features.share, 1e-4, 1.0)),
        np.log1p(features.disagreement / scale),
        position,
        position**2,
    ]
    return np.column_stack([levels, *continuous])


def fit_difficulty(
    design: npt.NDArray[np.float64],
    gene: npt.NDArray[np.int64],
    residual: npt.NDArray[np.float64],
    gene_scale: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Fit ``log σ = intercept[gene] + design · coef`` to the log absolute residuals.

    Least squares with a free intercept per gene (the within-gene estimator): the shared
    coefficients come from the deviations of the design and of ``log(|residual| + floor)``
    from their gene means. Genes without entries get the median intercept.

    Parameters
    ----------
    design
        :func:`difficulty_design` of the restored entries.
    gene, residual
        The entries' genes and signed residuals.
    gene_scale
        ``(G,)`` scale of the genes.

    Returns
    -------
    ``(coef, intercept)``.
    """
    n_genes = len(gene_scale)
    target = np.log(np.abs(residual) + RESIDUAL_FLOOR * gene_scale[gene])
    design_mean, count = group_means(gene, design, n_genes)
    target_mean, _ = group_means(gene, target, n_genes)
    coef, *_ = np.linalg.lstsq(design - design_mean[gene], target - target_mean[gene], rcond=None)
    intercept = target_mean - design_mean @ coef
    seen = count > 0
    intercept[~seen] = np.median(intercept[seen]) if seen.any() else 0.0
    return coef, intercept


def difficulty(
    calibration: Calibration, features: EntryFeatures, level: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """Per-entry difficulty ``σ > 0`` (the scale the scores are divided by)."""
    design = difficulty_design(
        features, level, calibration.n_levels, calibration.gene_mean, calibration.gene_scale
    )
    design = np.clip(design, calibration.design_low, calibration.design_high)
    return _scale(calibration, features.gene, design)


def _scale(
    calibration: Calibration, gene: npt.NDArray[np.int64], design: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """``exp(intercept[gene] + design · coef)``."""
    return np.exp(calibration.intercept[gene] + design @ calibration.coef)


def group_means(
    group: npt.NDArray[np.int64], values: npt.NDArray[np.float64], n_groups: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Mean of ``values`` (``(n,)`` or ``(n, k)``) per group, and each group's count.

    Groups without values get a mean of 0.
    """
    count = np.bincount(group, minlength=n_groups).astype(np.float64)
    safe = np.maximum(count, 1.0)
    if values.ndim == 1:
        return np.bincount(group, values, minlength=n_groups) / safe, count
    columns = [np.bincount(group, column, minlength=n_groups) / safe for column in values.T]
    return np.stack(columns, axis=1), count


def gene_statistics(
    gene: npt.NDArray[np.int64], truth: npt.NDArray[np.float64], n_genes: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Mean and standard deviation of each gene's calibration values (pooled where unseen).

    Standard deviations are floored at 1 % of the pooled one, so that a constant gene
    never divides by zero.
    """
    mean, count = group_means(gene, truth, n_genes)
    variance = group_means(gene, truth**2, n_genes)[0] - mean**2
    pooled_sd = float(np.std(truth)) or 1.0
    scale = np.sqrt(np.clip(variance, 0.0, None))
    seen = count > 1
    mean[~seen] = float(np.mean(truth))
    scale[~seen] = pooled_sd
    return mean, np.maximum(scale, 0.01 * pooled_sd)


def level_edges(
    scheme_shares: Sequence[npt.NDArray[np.float64]],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Missingness levels from the observed shares each calibration scheme gave its samples.

    Schemes are ordered by their median share; a level boundary (the geometric mean of the
    two medians) separates neighbours whose medians differ by at least :data:`LEVEL_RATIO`.

    Returns
    -------
    ``(edges, level_shares)``: the boundaries and each level's median share.
    """
    medians = np.sort([float(np.median(s)) for s in scheme_shares if len(s)])
    medians = np.maximum(medians, 1e-4)
    groups = [[medians[0]]]
    for median in medians[1:]:
        if median >= LEVEL_RATIO * groups[-1][-1]:
            groups.append([])
        groups[-1].append(median)
    edges = [float(np.sqrt(a[-1] * b[0])) for a, b in zip(groups, groups[1:], strict=False)]
    return np.asarray(edges), np.asarray([float(np.median(g)) for g in groups])


def bin_quantiles(
    scores: npt.NDArray[np.float64], index: npt.NDArray[np.int64], n_bins: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """Return counts, slots and :data:`N_QUANTILES` quantiles of ``scores`` per bin ``index``.

    Only bins with at least :data:`MIN_BIN_ENTRIES` scores get quantiles (the others are
    never used): bin ``b``'s are row ``slots[b]`` (-1 for the others).
    """
    counts = np.bincount(index, minlength=n_bins)
    full = np.flatnonzero(counts >= MIN_BIN_ENTRIES)
    slots = np.full(n_bins, -1, dtype=np.int32)
    slots[full] = np.arange(len(full))
    quantiles = np.empty((len(full), N_QUANTILES), dtype=np.float32)
    if len(full):
        order = np.lexsort((scores, index))
        ordered = scores[order]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        n = counts[full][:, None]
        position = np.linspace(0.0, 1.0, N_QUANTILES)[None, :] * (n - 1)
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, n - 1)
        share = position - below
        base = starts[full][:, None]
        quantiles[:] = (1 - share) * ordered[base + below] + share * ordered[base + above]
    return counts, slots, quantiles


def fit_calibration(
    features: EntryFeatures,
    truth: npt.NDArray[np.float64],
    scheme_shares: Sequence[npt.NDArray[np.float64]],
    gene_mean: npt.NDArray[np.float64],
    gene_scale: npt.NDArray[np.float64],
    *,
    floor: float,
    reference_blend: bool,
    schemes: list[str],
    n_samples: int,
) -> Calibration:
    """Fit the difficulty and the Mondrian bins on hidden calibration entries.

    The difficulty's per-gene intercepts cancel within the gene bins (a common factor of a
    bin's scores does not move its coverage); its few shared coefficients are fitted on the
    same entries, which costs the split-conformal guarantee nothing measurable (see
    :doc:`/uncertainty`).

    Parameters
    ----------
    features, truth
        The hidden entries restored and their true values (log scale).
    scheme_shares
        Observed shares of the samples under each hiding scheme (for the levels).
    gene_mean, gene_scale
        ``(G,)`` statistics of the genes (:func:`gene_statistics`).
    floor, reference_blend, schemes, n_samples
        Stored as :class:`Calibration` describes.

    Returns
    -------
    The fitted calibration.
    """
    residual = truth - features.value
    edges, level_shares = level_edges(scheme_shares)
    level = np.searchsorted(edges, features.share, side="right")
    design = difficulty_design(features, level, len(level_shares), gene_mean, gene_scale)
    coef, intercept = fit_difficulty(design, features.gene, residual, gene_scale)
    low, high = design.min(axis=0), design.max(axis=0)
    partial = Calibration(
        gene_mean, gene_scale, coef, intercept, low, high, edges, level_shares, {}, {}, {},
        floor, reference_blend, schemes, n_samples,
    )  # fmt: skip
    # the calibration entries are inside the design's range: no clipping to repeat
    scores = residual / _scale(partial, features.gene, design)
    n_genes, n_levels = len(gene_mean), len(level_shares)
    sizes = {"gene_level": n_genes * n_levels, "gene": n_genes, "level": n_levels, "all": 1}
    counts, slots, quantiles = {}, {}, {}
    for family, index in partial.bin_indices(features.gene, level).items():
        counts[family], slots[family], quantiles[family] = bin_quantiles(
            scores, index, sizes[family]
        )
    return replace(partial, counts=counts, slots=slots, quantiles=quantiles)
