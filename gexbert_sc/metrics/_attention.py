"""Checks of attention rankings: agreement with other rankings, and an ablation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd

from gexbert_sc._constants import OUTPUT_KEYS
from gexbert_sc.data._rankings import ranked_names
from gexbert_sc.data._validation import check_obs_key, measured_matrix, require_output
from gexbert_sc.metrics._imputation import masked_rmse
from gexbert_sc.model.base import check_model
from gexbert_sc.utils import check_fraction, check_positive_integers

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

    from gexbert_sc.model import GexBERT

#: The writers named when a ranking key is missing.
RANKING_WRITERS = (
    "gexbert_sc.tl.rank_genes_attention`, `gexbert_sc.tl.rank_genes_mean` or "
    "`scanpy.tl.rank_genes_groups"
)


def ranking_overlap(
    adata: AnnData, key: str, reference_key: str, *, n_genes: int = 50
) -> pd.DataFrame:
    """Share of each group's top genes that two rankings have in common.

    Parameters
    ----------
    adata
        AnnData holding both rankings in ``uns``, in the layout of
        :func:`scanpy.tl.rank_genes_groups` (e.g. :func:`gexbert_sc.tl.rank_genes_attention`
        against ``sc.tl.rank_genes_groups(..., method="wilcoxon")`` or
        :func:`gexbert_sc.tl.rank_genes_mean`).
    key, reference_key
        ``uns`` keys of the two rankings.
    n_genes
        Length of the top lists compared.

    Returns
    -------
    One row per group the two rankings share: ``group``, ``overlap`` (genes in both top
    lists), ``fraction`` (``overlap / n_genes``) and ``chance`` (the expected fraction of two
    random lists, ``n_genes / n_vars``).

    Raises
    ------
    KeyError
        If a ranking is missing.
    ValueError
        If the rankings share no group, or ``n_genes`` exceeds a ranking's length.
    """
    check_positive_integers(n_genes=n_genes)
    ranking = require_output(adata.uns, key, "uns", RANKING_WRITERS)
    reference = require_output(adata.uns, reference_key, "uns", RANKING_WRITERS)
    groups = [g for g in ranking["names"].dtype.names if g in reference["names"].dtype.names]
    if not groups:
        msg = f"`uns[{key!r}]` and `uns[{reference_key!r}]` rank no group in common."
        raise ValueError(msg)
    shortest = min(len(ranking["names"]), len(reference["names"]))
    if n_genes > shortest:
        msg = f"`n_genes={n_genes}` exceeds the {shortest} genes of the shorter ranking."
        raise ValueError(msg)
    rows = []
    for group in groups:
        top = set(ranked_names(ranking, group, n_genes))
        overlap = len(top & set(ranked_names(reference, group, n_genes)))
        rows.append({"group": group, "overlap": overlap, "fraction": overlap / n_genes})
    return pd.DataFrame(rows).assign(chance=n_genes / adata.n_vars)


def attention_ablation(
    model: GexBERT,
    adata: AnnData,
    groupby: str,
    *,
    key: str = OUTPUT_KEYS.RANK_ATTENTION,
    groups: Sequence[str] | None = None,
    n_genes: int = 20,
    n_random: int = 5,
    eval_fraction: float = 0.2,
    min_expressed: float = 0.1,
    seed: int = 0,
    batch_size: int | None = None,
) -> pd.DataFrame:
    """Test whether hiding a group's top-ranked genes hurts its restoration more than random genes.

    For each group, a random ``eval_fraction`` of the genes expressed in the group (non-zero
    in at least ``min_expressed`` of its samples, top genes excluded) is hidden and restored
    from the rest of each sample's profile, three ways: with nothing else hidden; with the
    group's ``n_genes`` top genes of the ranking ``uns[key]`` hidden too; and with as many
    random expressed genes hidden instead (``n_random`` draws). If attention points at the
    genes the model relies on, hiding the top genes raises the restoration error more than
    hiding random ones.

    Parameters
    ----------
    model
        A trained :class:`~gexbert_sc.GexBERT` (it restores genes).
    adata
        AnnData with the model's genes, the ``groupby`` column and the ranking.
    groupby
        ``obs`` column of the groups ranked in ``uns[key]``.
    key
        ``uns`` key of the ranking (e.g. written by :func:`gexbert_sc.tl.rank_genes_attention`).
    groups
        Groups to test (default: every group of the ranking).
    n_genes
        Top genes hidden per group.
    n_random
        Random draws of as many expressed genes.
    eval_fraction
        Share of the group's expressed genes restored and scored.
    min_expressed
        Share of a group's samples in which a gene must be non-zero to count as expressed.
    seed
        Seed of the evaluation genes and the random draws.
    batch_size
        Samples per minibatch of the restorations.

    Returns
    -------
    One row per group: ``n_samples``, ``n_eval_genes``, the restoration RMSE of the
    evaluation genes (on ``log1p`` of counts, or the values of log-scale input)
    ``rmse_intact``, ``rmse_top``, ``rmse_random`` (mean over draws) and
    ``rmse_random_sd``, and ``top_hurts_more`` (``rmse_top > rmse_random``).

    Raises
    ------
    KeyError
        If the column or the ranking is missing, a group of ``groups`` is not ranked, or the
        ranking names genes the model does not know.
    ValueError
        For invalid numbers, or a group with too few expressed genes to draw from.
    """
    from gexbert_sc.model import GexBERT

    check_model(model, GexBERT)
    check_positive_integers(n_genes=n_genes, n_random=n_random)
    check_fraction("eval_fraction", eval_fraction, closed_low=False)
    check_fraction("min_expressed", min_expressed, closed_low=True)
    expression = model.expression_of(adata)
    check_obs_key(adata, groupby, "groupby")
    ranking = require_output(adata.uns, key, "uns", RANKING_WRITERS)
    values = measured_matrix(expression, model.registry_["setup_args"])
    labels = adata.obs[groupby].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    rows = []
    for group in _tested_groups(ranking, key, groups):
        inside = labels == group
        top = model._gene_indices(ranked_names(ranking, group, n_genes))
        genes = _AblationGenes.draw(values[inside], top, eval_fraction, min_expressed, n_genes, rng)
        scored = _Restorer(model, expression[inside], values[inside], genes.evaluated, batch_size)
        random = [
            scored.rmse(rng.choice(genes.pool, n_genes, replace=False)) for _ in range(n_random)
        ]
        rows.append(
            {
                "group": group,
                "n_samples": int(inside.sum()),
                "n_eval_genes": len(genes.evaluated),
                "rmse_intact": scored.rmse(np.array([], dtype=int)),
                "rmse_top": scored.rmse(top),
                "rmse_random": float(np.mean(random)),
                "rmse_random_sd": float(np.std(random, ddof=1)) if n_random > 1 else np.nan,
            }
        )
    table = pd.DataFrame(rows)
    return table.assign(top_hurts_more=table["rmse_top"] > table["rmse_random"])


def _tested_groups(ranking: dict, key: str, groups: Sequence[str] | None) -> list[str]:
    """Return the ranked groups to test: ``groups`` (checked against the ranking) or all."""
    ranked = list(ranking["names"].dtype.names)
    if groups is None:
        return ranked
    unknown = [group for group in groups if group not in ranked]
    if unknown:
        msg = f"`groups` {unknown} are not ranked in `uns[{key!r}]`, which ranks {ranked}."
        raise KeyError(msg)
    return list(groups)


class _AblationGenes:
    """The evaluation genes of one group and the pool the random genes are drawn from."""

    def __init__(self, evaluated: np.ndarray, pool: np.ndarray):
        self.evaluated, self.pool = evaluated, pool

    @classmethod
    def draw(
        cls,
        values: np.ndarray,
        top: np.ndarray,
        eval_fraction: float,
        min_expressed: float,
        n_genes: int,
        rng: np.random.Generator,
    ) -> _AblationGenes:
        """Draw the evaluation genes among the expressed genes outside ``top``."""
        expressed = np.nan_to_num(values, nan=0.0) != 0
        candidates = np.setdiff1d(np.flatnonzero(expressed.mean(0) >= min_expressed), top)
        n_eval = max(1, round(eval_fraction * len(candidates)))
        if len(candidates) < n_eval + n_genes:
            msg = (
                f"a group has {len(candidates)} expressed genes outside its top genes: too few "
                f"for {n_eval} evaluation genes and {n_genes} random ones; lower "
                "`min_expressed`, `eval_fraction` or `n_genes`."
            )
            raise ValueError(msg)
        evaluated = np.sort(rng.choice(candidates, n_eval, replace=False))
        return cls(evaluated, np.setdiff1d(candidates, evaluated))


class _Restorer:
    """Restore one group's evaluation genes with chosen genes hidden; score the restoration."""

    def __init__(
        self,
        model: GexBERT,
        expression: AnnData,
        values: np.ndarray,
        evaluated: np.ndarray,
        batch_size: int | None,
    ):
        self.model = model
        self.values = values
        self.evaluated = evaluated
        self.batch_size = batch_size
        self.obs = expression.obs.copy()
        self.truth = values[:, evaluated]
        self.scored = ~np.isnan(self.truth)
        self.log = np.log1p if bool(model.module.input_is_counts) else np.asarray

    def rmse(self, hidden: np.ndarray) -> float:
        """RMSE of the evaluation genes restored with them and ``hidden`` hidden."""
        query = self.values.copy()
        query[:, np.union1d(hidden, self.evaluated)] = np.nan
        view = ad.AnnData(query, obs=self.obs, var=pd.DataFrame(index=self.model.var_names))
        restored = self.model.get_imputed_expression(
            view,
            genes=self.model.var_names[self.evaluated],
            batch_size=self.batch_size,
            return_numpy=True,
        )
        truth = np.nan_to_num(self.truth)
        return masked_rmse(self.log(restored), self.log(truth), self.scored)
