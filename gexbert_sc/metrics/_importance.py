"""Deletion and insertion curves: whether a gene ranking is faithful to what the model uses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from gexbert_sc.data._rankings import ranked_names
from gexbert_sc.data._validation import check_obs_key, require_output
from gexbert_sc.metrics._attention import RANKING_WRITERS
from gexbert_sc.model.base import check_model
from gexbert_sc.model.base._importance import TargetReader, _subsample
from gexbert_sc.utils import check_positive_integers

if TYPE_CHECKING:
    from anndata import AnnData

    from gexbert_sc.model import GexBERTBase

#: Name of the random orders in the results.
RANDOM = "random"


@dataclass(frozen=True)
class DeletionTest:
    """What :func:`deletion_curve` returns.

    Attributes
    ----------
    summary
        One row per ranking and group (see :func:`deletion_curve`).
    curves
        The curves, long form: ``ranking`` (``"random"`` for the random orders), ``draw``
        (the random order's number; 0 for a ranking), ``group``, ``mode`` (``"deletion"`` or
        ``"insertion"``), ``n_genes`` and ``score`` (the mean target there).
    """

    summary: pd.DataFrame
    curves: pd.DataFrame


def deletion_curve(
    model: GexBERTBase,
    adata: AnnData,
    ranking_key: str | Sequence[str],
    groupby: str,
    *,
    groups: Sequence[str] | None = None,
    n_genes: int = 50,
    ks: Sequence[int] = (10, 20, 50),
    n_random: int = 5,
    max_samples: int | None = 100,
    target: str | None = None,
    batch_size: int | None = None,
    seed: int = 0,
) -> DeletionTest:
    """Test gene rankings by deletion and insertion: the model should lose most from top genes.

    For each group, the group's samples are read with the ranking's top ``n`` genes read as
    missing (*deletion*: ``n`` from 0 to ``n_genes``) and with only those genes read
    (*insertion*), and the model's target (``target`` of
    :meth:`~gexbert_sc.GexBERT.get_gene_importance`; for a classifier, the probability of
    each sample's class predicted from all its genes) is averaged over them. A ranking
    faithful to the model makes the deletion curve fall fast (a low deletion AUC) and the
    insertion curve rise fast (a high insertion AUC). The same is done for ``n_random``
    random orders of all genes, whose spread says how far a ranking must be from random to
    count. Any ranking in ``uns`` in the layout of :func:`scanpy.tl.rank_genes_groups` is
    read: :func:`gexbert_sc.tl.rank_genes_importance`, Wilcoxon, logistic-regression
    coefficients (``method="logreg"``), so that they can be compared on the same model.

    Parameters
    ----------
    model
        A trained model of the GexBERT family (whose use of genes is tested).
    adata
        AnnData with the model's genes, the ``groupby`` column and the rankings.
    ranking_key
        ``uns`` key(s) of the rankings.
    groupby
        ``obs`` column of the groups the rankings rank.
    groups
        Groups to test (default: every group of the first ranking).
    n_genes
        Top genes removed (or read) at most.
    ks
        Numbers of top genes at which comprehensiveness and sufficiency are reported
        (each at most ``n_genes``).
    n_random
        Random orders of the genes.
    max_samples
        Samples of a group read at most (a random subset drawn with ``seed``; ``None``: all).
    target
        What is measured (see :meth:`~gexbert_sc.GexBERT.get_gene_importance`).
    batch_size
        Samples per forward pass.
    seed
        Seed of the random orders and the subset of samples.

    Returns
    -------
    A :class:`DeletionTest`. Its ``summary`` has one row per ranking and group: ``ranking``,
    ``group``, ``n_samples``, ``full`` (the mean target with every gene read),
    ``deletion_auc`` and ``insertion_auc`` (the mean of the curve over 0 to ``n_genes``
    removed / read genes, trapezoid rule), ``random_deletion_auc`` and
    ``random_insertion_auc`` (mean over the random orders) with their standard deviations
    (``..._sd``), ``deletion_margin_sd`` (``(random_deletion_auc - deletion_auc) /
    random_deletion_auc_sd``: how many random-order sds the ranking's curve lies below), and
    for each ``k`` of ``ks``, ``comprehensiveness_k`` (``full`` minus the target with the top
    ``k`` removed) and ``sufficiency_k`` (``full`` minus the target with only the top ``k``
    read), as defined by ERASER (DeYoung et al. 2020).

    Raises
    ------
    KeyError
        If ``groupby`` or a ranking is missing, a group is not ranked, or a ranking names
        genes the model does not know.
    ValueError
        For invalid numbers, a ``k`` above ``n_genes``, or a ranking shorter than ``n_genes``.
    """
    check_model(model)
    check_positive_integers(n_genes=n_genes, n_random=n_random)
    if max_samples is not None:
        check_positive_integers(max_samples=max_samples)
    check_positive_integers(**{f"ks[{i}]": k for i, k in enumerate(ks)})
    if any(k > n_genes for k in ks):
        msg = f"every k of `ks` must be at most `n_genes={n_genes}`, got {list(ks)}."
        raise ValueError(msg)
    check_obs_key(adata, groupby, "groupby")
    keys = [ranking_key] if isinstance(ranking_key, str) else list(ranking_key)
    rankings = {key: require_output(adata.uns, key, "uns", RANKING_WRITERS) for key in keys}
    tested = _tested_groups(rankings, groups)
    orders = {key: _top_genes(model, rankings[key], key, tested, n_genes) for key in keys}
    steps = np.unique(np.r_[0, np.round(np.geomspace(1, n_genes, 12)), list(ks)]).astype(int)
    labels = adata.obs[groupby].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    summaries, curves = [], []
    for group in tested:
        members = np.flatnonzero(labels == group)
        if len(members) == 0:
            msg = f"group {group!r} has no samples in `adata.obs[{groupby!r}]`."
            raise ValueError(msg)
        rows = members[_subsample(np.zeros(len(members), int), max_samples, seed)]
        reader = TargetReader(model, adata, rows, target, batch_size)
        random = [rng.permutation(len(model.var_names))[:n_genes] for _ in range(n_random)]
        drawn = [_curves(reader, order, steps) for order in random]
        for draw, curve in enumerate(drawn):
            curves.append(_long(curve, steps, RANDOM, draw, group))
        for key in keys:
            curve = _curves(reader, orders[key][group], steps)
            curves.append(_long(curve, steps, key, 0, group))
            summaries.append(
                _summary(curve, drawn, steps, ks, n_genes)
                | {"ranking": key, "group": group, "n_samples": len(rows)}
            )
    summary = pd.DataFrame(summaries)
    first = ["ranking", "group", "n_samples"]
    return DeletionTest(
        summary[first + [c for c in summary.columns if c not in first]],
        pd.concat(curves, ignore_index=True),
    )


def _tested_groups(rankings: dict[str, dict], groups: Sequence[str] | None) -> list[str]:
    """Return the groups to test: ``groups`` (ranked by every ranking) or the first's groups."""
    first = next(iter(rankings.values()))
    tested = list(first["names"].dtype.names) if groups is None else [str(g) for g in groups]
    for key, ranking in rankings.items():
        unranked = [group for group in tested if group not in ranking["names"].dtype.names]
        if unranked:
            msg = (
                f"`uns[{key!r}]` does not rank the groups {unranked}; it ranks "
                f"{list(ranking['names'].dtype.names)}."
            )
            raise KeyError(msg)
    return tested


def _top_genes(
    model: GexBERTBase, ranking: dict, key: str, groups: list[str], n_genes: int
) -> dict[str, np.ndarray]:
    """Model positions of each group's top ``n_genes`` genes of a ranking."""
    if len(ranking["names"]) < n_genes:
        msg = (
            f"`uns[{key!r}]` ranks {len(ranking['names'])} genes per group, fewer than "
            f"`n_genes={n_genes}`; rank more genes (e.g. `n_genes=adata.n_vars`)."
        )
        raise ValueError(msg)
    return {group: model._gene_indices(ranked_names(ranking, group, n_genes)) for group in groups}


def _curves(reader: TargetReader, order: np.ndarray, steps: np.ndarray) -> dict[str, np.ndarray]:
    """Mean target with the first ``n`` genes of ``order`` removed / alone read, per step."""
    n_vars = len(reader.x[0])
    deletion, insertion = [], []
    for n in steps:
        removed = np.zeros(n_vars, dtype=bool)
        removed[order[:n]] = True
        deletion.append(reader.mean_readout(removed))
        insertion.append(reader.mean_readout(~removed))
    return {"deletion": np.array(deletion), "insertion": np.array(insertion)}


def _auc(curve: np.ndarray, steps: np.ndarray, n_genes: int) -> float:
    """Mean of a curve over ``0 .. n_genes`` genes (trapezoid rule)."""
    return float(np.trapezoid(curve, steps) / n_genes)


def _summary(
    curve: dict[str, np.ndarray],
    random: list[dict[str, np.ndarray]],
    steps: np.ndarray,
    ks: Sequence[int],
    n_genes: int,
) -> dict[str, float]:
    """AUCs of a ranking's curves beside the random orders', comprehensiveness, sufficiency."""
    full = float(curve["deletion"][0])
    row = {"full": full}
    for mode in ("deletion", "insertion"):
        row[f"{mode}_auc"] = _auc(curve[mode], steps, n_genes)
        drawn = [_auc(order[mode], steps, n_genes) for order in random]
        row[f"random_{mode}_auc"] = float(np.mean(drawn))
        row[f"random_{mode}_auc_sd"] = float(np.std(drawn, ddof=1)) if len(drawn) > 1 else np.nan
    spread = row["random_deletion_auc_sd"]
    margin = row["random_deletion_auc"] - row["deletion_auc"]
    row["deletion_margin_sd"] = margin / spread if spread > 0 else np.nan
    for k in ks:
        at = int(np.flatnonzero(steps == k)[0])
        row[f"comprehensiveness_{k}"] = full - float(curve["deletion"][at])
        row[f"sufficiency_{k}"] = full - float(curve["insertion"][at])
    return row


def _long(
    curve: dict[str, np.ndarray], steps: np.ndarray, ranking: str, draw: int, group: str
) -> pd.DataFrame:
    """One ranking's curves of one group in long form."""
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "ranking": ranking,
                    "draw": draw,
                    "group": group,
                    "mode": mode,
                    "n_genes": steps,
                    "score": values,
                }
            )
            for mode, values in curve.items()
        ],
        ignore_index=True,
    )
