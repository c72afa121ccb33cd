"""Gene importance from the ``[CLS]`` token's attention, for every GexBERT model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import pandas as pd
import torch

from gexbert_sc._constants import MODULE_KEYS
from gexbert_sc.data._validation import check_obs_key
from gexbert_sc.utils import is_finite_number

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

#: How the ``[CLS]`` attention of the blocks is combined into one weight per context gene.
AttentionMethod = Literal["last", "mean", "rollout"]

#: Group name of :meth:`AttentionMixin.get_attention_scores` without ``groupby``.
ALL_SAMPLES = "all"


def cls_gene_attention(
    weights: torch.Tensor, valid: torch.Tensor, method: AttentionMethod
) -> torch.Tensor:
    """Relative attention of the ``[CLS]`` token to each context gene of each sample.

    Parameters
    ----------
    weights
        Attention weights of the encoder blocks: ``(B, n_layers, n_heads, 1 + L)`` ``[CLS]``
        rows for ``"last"`` and ``"mean"``, ``(B, n_layers, n_heads, 1 + L, 1 + L)`` for
        ``"rollout"`` (token ``0`` is ``[CLS]``).
    valid
        ``(B, L)`` bool, ``False`` on padding.
    method
        ``"last"``: the last block, mean over heads; ``"mean"``: mean over blocks and heads;
        ``"rollout"``: attention rollout (Abnar & Zuidema 2020), the product over blocks of
        the head-averaged attention with the residual added (``(A + I) / 2``, rows
        renormalised), read on the ``[CLS]`` row.

    Returns
    -------
    ``(B, L)`` weights of the context genes (0 on padding), scaled so that each sample's sum
    is its number of context genes: 1 is the share a gene would get if the ``[CLS]`` token's
    attention to genes were uniform. Its attention to itself is left out.
    """
    if method == "rollout":
        mixed = weights.mean(2)
        mixed = 0.5 * mixed + 0.5 * torch.eye(mixed.shape[-1], device=mixed.device)
        mixed = mixed / mixed.sum(-1, keepdim=True)
        row = mixed[:, -1, 0]
        for layer in range(mixed.shape[1] - 2, -1, -1):
            row = (row.unsqueeze(1) @ mixed[:, layer]).squeeze(1)
    elif method == "last":
        row = weights[:, -1].mean(1)
    else:
        row = weights.mean((1, 2))
    genes = torch.where(valid, row[:, 1:], 0.0)
    total = genes.sum(1, keepdim=True).clamp_min(torch.finfo(genes.dtype).tiny)
    return genes / total * valid.sum(1, keepdim=True)


def shrunk_mean(sums: np.ndarray, counts: np.ndarray, prior: float) -> np.ndarray:
    """Mean relative attention over the samples that held a gene, shrunk toward 1 (uniform).

    ``(sums + prior) / (counts + prior)``: ``prior`` pseudo-samples of uniform attention, so
    that a gene seldom in context does not top a ranking on a few samples' noise (NaN where
    ``prior`` is 0 and the gene was never in context).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums + prior) / (counts + prior)


class AttentionMixin:
    """``[CLS]``-attention gene importance (:meth:`get_attention_scores`)."""

    @torch.inference_mode()
    def _attention_totals(
        self,
        adata: AnnData | MuData | None,
        indices: Sequence[int] | None,
        codes: np.ndarray,
        n_groups: int,
        method: AttentionMethod,
        batch_size: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per group and gene, the summed relative attention and the samples that held it.

        ``codes`` gives each read sample's group (``0 .. n_groups - 1``).
        """
        n_vars = len(self.var_names)
        sums = torch.zeros(n_groups * n_vars, dtype=torch.float64)
        counts = torch.zeros(n_groups * n_vars, dtype=torch.float64)
        rows = "all" if method == "rollout" else "cls"
        batches = self._encoded_batches(adata, indices, batch_size, encoding={"attention": rows})
        for positions, _, out in batches:
            valid = out[MODULE_KEYS.CONTEXT_VALID_KEY]
            relative = cls_gene_attention(out[MODULE_KEYS.ATTENTION_KEY].float(), valid, method)
            group = torch.as_tensor(codes[positions], device=valid.device)
            cells = (group[:, None] * n_vars + out[MODULE_KEYS.CONTEXT_IDX_KEY])[valid].cpu()
            sums.index_add_(0, cells, relative[valid].double().cpu())
            counts.index_add_(0, cells, torch.ones(len(cells), dtype=torch.float64))
        shape = (n_groups, n_vars)
        return sums.view(shape).numpy(), counts.view(shape).numpy()

    def get_attention_scores(
        self,
        adata: AnnData | MuData | None = None,
        indices: Sequence[int] | None = None,
        groupby: str | None = None,
        *,
        method: AttentionMethod = "last",
        versus_rest: bool = False,
        prior: float = 10.0,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Score the importance of each gene from the ``[CLS]`` token's attention.

        Each sample is encoded on its fixed inference context (non-zero genes first), and
        the ``[CLS]`` token's attention to each context gene is read (:func:`cls_gene_attention`
        with ``method``), scaled so that 1 is the uniform share. A gene's score in a group is
        the mean of these weights **over the group's samples whose context held the gene**
        (so a gene is not ranked low for being seldom in context, i.e. seldom expressed),
        shrunk toward 1 by ``prior`` pseudo-samples (:func:`shrunk_mean`). Training keeps
        the fused attention kernel: only this call computes the weights. Attention measures
        what the model reads, not what drives the biology: see :doc:`/interpretability` for
        how far its rankings agree with differential expression.

        Parameters
        ----------
        adata
            Data with the model's genes (default: the model's AnnData).
        indices
            Samples to read (default: all).
        groupby
            ``obs`` column of groups: one score per group and gene (default: one group,
            ``"all"``, of every sample).
        method
            ``"last"`` (last block), ``"mean"`` (mean over blocks) or ``"rollout"``
            (attention rollout, which also reads the blocks' token-to-token attention).
        versus_rest
            Score each group against the other groups: the group's score minus that of the
            samples outside it (the group-specific score of
            :func:`gexbert_sc.tl.rank_genes_attention`).
        prior
            Pseudo-samples of uniform attention each mean is shrunk with (``>= 0``; with 0, a
            gene never in a group's context has a NaN score).
        batch_size
            Samples per minibatch (does not change the result).

        Returns
        -------
        A tidy DataFrame, one row per group and gene: ``group``, ``gene``, ``score``,
        ``rank`` (1 = highest score in the group; NaN scores last), ``context_fraction`` (the
        share of the group's samples whose context held the gene); with ``versus_rest`` also
        ``group_score``, ``rest_score`` and ``rest_context_fraction``.

        Raises
        ------
        ValueError
            For an unknown ``method``, a negative ``prior``, missing groups, or
            ``versus_rest`` with fewer than two groups.
        KeyError
            If ``groupby`` is not an ``obs`` column.
        """
        if method not in get_args(AttentionMethod):
            msg = f"`method` must be one of {get_args(AttentionMethod)}, got {method!r}."
            raise ValueError(msg)
        if not is_finite_number(prior) or prior < 0:
            msg = f"`prior` must be a number >= 0, got {prior!r}."
            raise ValueError(msg)
        names, codes = self._sample_groups(adata, indices, groupby)
        if versus_rest and len(names) < 2:
            msg = f"`versus_rest=True` needs at least two groups in `groupby`, got {len(names)}."
            raise ValueError(msg)
        sums, counts = self._attention_totals(adata, indices, codes, len(names), method, batch_size)
        sizes = np.bincount(codes, minlength=len(names))[:, None]
        columns = {
            "group_score": shrunk_mean(sums, counts, prior),
            "context_fraction": counts / sizes,
        }
        if versus_rest:
            rest_sums, rest_counts = sums.sum(0) - sums, counts.sum(0) - counts
            columns["rest_score"] = shrunk_mean(rest_sums, rest_counts, prior)
            columns["rest_context_fraction"] = rest_counts / (sizes.sum() - sizes)
            columns["score"] = columns["group_score"] - columns["rest_score"]
        else:
            columns["score"] = columns.pop("group_score")
        table = pd.DataFrame(
            {
                "group": pd.Categorical(np.repeat(names, len(self.var_names)), categories=names),
                "gene": np.tile(np.asarray(self.var_names), len(names)),
                **{key: value.ravel() for key, value in columns.items()},
            }
        )
        ranks = table.groupby("group", observed=True)["score"].rank(
            ascending=False, method="first", na_option="bottom"
        )
        table.insert(3, "rank", ranks.astype(int))
        order = ["group", "gene", "score", "rank", *(c for c in columns if c != "score")]
        return table[order]

    def _sample_groups(
        self, adata: AnnData | MuData | None, indices: Sequence[int] | None, groupby: str | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Names of the groups present among the read samples and each sample's group code."""
        n_rows = self._n_rows(adata, indices)
        if groupby is None:
            return np.array([ALL_SAMPLES]), np.zeros(n_rows, dtype=np.int64)
        data = self.adata if adata is None else adata
        check_obs_key(data, groupby, "groupby")
        labels = data.obs[groupby]
        if indices is not None:
            labels = labels.iloc[np.asarray(indices)]
        if labels.isna().any():
            msg = (
                f"`adata.obs[{groupby!r}]` (`groupby`) has {int(labels.isna().sum())} missing "
                "values among the samples read; drop those samples or fill them."
            )
            raise ValueError(msg)
        categorical = pd.Categorical(labels)
        categorical = categorical.remove_unused_categories()
        return np.asarray(categorical.categories.astype(str)), categorical.codes.astype(np.int64)
