"""Gene importance of every GexBERT model: attention, gradients, integrated gradients, deletion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import pandas as pd
import torch
from scvi import settings

from gexbert_sc._constants import MODULE_KEYS
from gexbert_sc.model.base._attention import AttentionMethod
from gexbert_sc.module._attribution import (
    Minibatch,
    deletion,
    gradient_attention,
    integrated_gradients,
)
from gexbert_sc.module._presence import VALUES_KEY
from gexbert_sc.utils import check_positive_integers, is_integer

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

    from gexbert_sc.model.base._importance_targets import ImportanceTarget

#: The methods of :meth:`ImportanceMixin.get_gene_importance`.
ImportanceMethod = Literal[
    "attention",
    "attention_mean",
    "rollout",
    "gradient_attention",
    "integrated_gradients",
    "deletion",
]
#: The attention methods and the block combination of ``get_attention_scores`` each reads.
ATTENTION_METHODS: dict[str, AttentionMethod] = {
    "attention": "last",
    "attention_mean": "mean",
    "rollout": "rollout",
}
#: Sample-gene variants encoded per forward pass by ``"deletion"``.
DELETION_CHUNK = 512


class ImportanceMixin:
    """Gene importance for a model's prediction (:meth:`get_gene_importance`).

    A model class defines ``_importance_target(target, data, rows)``, which turns the
    ``target`` argument into the explained
    :class:`~gexbert_sc.model.base._importance_targets.ImportanceTarget`.
    """

    def get_gene_importance(
        self,
        adata: AnnData | MuData | None = None,
        groupby: str | None = None,
        *,
        method: ImportanceMethod = "integrated_gradients",
        target: str | None = None,
        indices: Sequence[int] | None = None,
        versus_rest: bool = False,
        max_samples: int | None = 500,
        n_steps: int = 16,
        prior: float = 10.0,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> pd.DataFrame:
        """Score how much the model's output for each group owes to each gene.

        Every method but the attention ones explains one number per sample (``target``),
        computed on the sample's fixed inference context, and a gene's score in a group is
        the mean of its attribution over the group's samples (0 in a sample that did not
        measure it; for a survival model's risk, which a gene raises in some samples and
        lowers in others, the mean of its absolute value):

        - ``"integrated_gradients"`` (default): integrated gradients (Captum) of the target
          along each gene's *presence*, from every gene read as missing to the sample as
          measured (:func:`gexbert_sc.module._attribution.integrated_gradients`); complete:
          a sample's attributions sum to its target minus the target of nothing read.
          ``n_steps`` forward and backward passes.
        - ``"gradient_attention"``: attention weighted by the target's gradient, propagated
          through the blocks (Chefer et al. 2021); context genes only. One forward and
          backward pass.
        - ``"deletion"``: the target's drop when the gene alone is read as missing (exact
          in-silico deletion); one forward pass per measured gene and sample.
        - ``"attention"`` / ``"attention_mean"`` / ``"rollout"``: the ``[CLS]`` token's
          attention (last block / mean of blocks / attention rollout), as
          :meth:`get_attention_scores`; these read no target. One forward pass.

        Measured costs and how the methods compare are in :doc:`/interpretability`.

        Parameters
        ----------
        adata
            Data with the model's genes (default: the model's AnnData).
        groupby
            ``obs`` column of the groups (default: one group, ``"all"``).
        method
            One of the methods above.
        target
            What is explained. A classifier: ``"predicted"`` (default; each sample's
            predicted class probability), ``"label"`` (the probability of the class in the
            classifier's labels column of ``adata``) or a class name; a survival model:
            ``"risk"`` (the log relative hazard); :class:`~gexbert_sc.GexBERT`:
            ``"embedding"`` (default; how far the sample's embedding stands out from the
            mean embedding along its own direction, Geneformer's embedding shift) or
            ``"restoration"`` (minus the restoration error of the genes the sample
            measured). Not read by the attention methods (pass ``None``).
        indices
            Samples to read (default: all).
        versus_rest
            Score each group against the others: the group's mean attribution minus that of
            the samples outside it (``group_score`` and ``rest_score`` are kept).
        max_samples
            Samples read per group at most (a random subset drawn with ``seed``; ``None``:
            all). The cost of every method but attention grows with it.
        n_steps
            Quadrature points of ``"integrated_gradients"``.
        prior
            Shrinkage of the attention methods (:meth:`get_attention_scores`).
        batch_size
            Samples per minibatch (does not change the result beyond float rounding).
        seed
            Seed of the subset of samples.

        Returns
        -------
        A tidy DataFrame, one row per group and gene: ``group``, ``gene``, ``score``,
        ``rank`` (1 = most important in the group), with ``versus_rest`` also
        ``group_score`` and ``rest_score``, and the share of the group's (and the other
        samples') samples that measured the gene non-zero, ``expressed_fraction`` (and
        ``rest_expressed_fraction``); the attention methods give their
        :meth:`get_attention_scores` columns instead. ``table.attrs`` records ``method``,
        ``target``, ``n_samples`` per group and, for integrated gradients, the quadrature
        error: the samples' summed absolute error over their summed absolute score
        difference (``relative_delta``; more ``n_steps`` lower it).

        Raises
        ------
        ValueError
            For an unknown ``method`` or ``target``, a ``target`` with an attention method,
            invalid numbers, missing groups, or ``versus_rest`` with fewer than two groups.
        KeyError
            If ``groupby`` (or the labels column ``target="label"`` reads) is not in ``obs``.
        """
        if method not in get_args(ImportanceMethod):
            msg = f"`method` must be one of {get_args(ImportanceMethod)}, got {method!r}."
            raise ValueError(msg)
        check_positive_integers(n_steps=n_steps)
        if max_samples is not None:
            check_positive_integers(max_samples=max_samples)
        if not is_integer(seed):
            msg = f"`seed` must be an integer, got {seed!r}."
            raise ValueError(msg)
        if method in ATTENTION_METHODS:
            if target is not None:
                msg = (
                    f"`method={method!r}` reads no target (attention does not depend on what "
                    f"is explained); pass `target=None`, got {target!r}."
                )
                raise ValueError(msg)
            return self._attention_importance(
                adata, indices, groupby, method, versus_rest, max_samples, prior, batch_size, seed
            )
        names, codes, rows = self._grouped_samples(adata, indices, groupby, max_samples, seed)
        if versus_rest and len(names) < 2:
            msg = f"`versus_rest=True` needs at least two groups in `groupby`, got {len(names)}."
            raise ValueError(msg)
        explained = self._importance_target(target, adata, rows)
        reading = _Attribution(self, explained, method, n_steps)
        batch_size = self._resolve_batch_size(batch_size, None)
        attributions, expressed = reading.run(adata, rows, batch_size)
        if explained.by_magnitude:
            attributions = np.abs(attributions)
        table = _group_table(names, codes, attributions, expressed, self.var_names, versus_rest)
        sizes = np.bincount(codes, minlength=len(names)).tolist()
        table.attrs.update(
            method=method,
            target=explained.name,
            n_samples=dict(zip(names, sizes, strict=True)),
        )
        if method == "integrated_gradients":
            table.attrs["relative_delta"] = reading.relative_delta
        return table

    def _attention_importance(
        self,
        adata: AnnData | MuData | None,
        indices: Sequence[int] | None,
        groupby: str | None,
        method: str,
        versus_rest: bool,
        max_samples: int | None,
        prior: float,
        batch_size: int | None,
        seed: int,
    ) -> pd.DataFrame:
        """:meth:`get_attention_scores` on the (sub)sampled samples of each group."""
        _, _, rows = self._grouped_samples(adata, indices, groupby, max_samples, seed)
        table = self.get_attention_scores(
            adata,
            rows,
            groupby,
            method=ATTENTION_METHODS[method],
            versus_rest=versus_rest,
            prior=prior,
            batch_size=batch_size,
        )
        table.attrs.update(method=method, target=None)
        return table

    def _grouped_samples(
        self,
        adata: AnnData | MuData | None,
        indices: Sequence[int] | None,
        groupby: str | None,
        max_samples: int | None,
        seed: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the group names, and each sample read's group code and row.

        At most ``max_samples`` per group are read, drawn with ``seed``.
        """
        names, codes = self._sample_groups(adata, indices, groupby)
        kept = _subsample(codes, max_samples, seed)
        samples = np.arange(len(codes)) if indices is None else np.asarray(indices)
        return names, codes[kept], samples[kept]


def check_target(target: str | None, allowed: Sequence[str], model_name: str) -> str:
    """Return ``target`` (its first allowed value when ``None``) or raise a ``ValueError``.

    Parameters
    ----------
    target
        The ``target`` argument of :meth:`ImportanceMixin.get_gene_importance`.
    allowed
        The targets the model explains, its default first.
    model_name
        The model's class name, for the message.

    Returns
    -------
    The target name.
    """
    if target is None:
        return allowed[0]
    if target not in allowed:
        msg = f"`target` of a {model_name} must be one of {list(allowed)}, got {target!r}."
        raise ValueError(msg)
    return target


class _Attribution:
    """Per-sample attributions of one method and target, minibatch by minibatch."""

    def __init__(self, model, target: ImportanceTarget, method: str, n_steps: int):
        self.model, self.target, self.method, self.n_steps = model, target, method, n_steps
        self.abs_delta = self.abs_difference = 0.0

    @property
    def relative_delta(self) -> float:
        """Summed absolute quadrature error over summed absolute score difference."""
        return self.abs_delta / max(self.abs_difference, 1e-12)

    def run(
        self, adata: AnnData | MuData | None, rows: np.ndarray, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(n, G)`` attributions and non-zero measured mask of the samples ``rows``."""
        model = self.model
        model._check_if_trained()
        module = model.module
        module.eval()
        attributions = np.zeros((len(rows), len(model.var_names)), dtype=np.float32)
        expressed = np.zeros(attributions.shape, dtype=bool)
        start = 0
        for tensors in model.minibatches(adata, rows, batch_size):
            inputs = model._inference_input(tensors, None)
            x = inputs[MODULE_KEYS.X_KEY]
            missing, batch_index = inputs[MODULE_KEYS.MISSING_KEY], inputs[MODULE_KEYS.BATCH_KEY]
            positions = np.arange(start, start + len(x))
            start += len(x)
            with torch.no_grad():
                full = _as_measured(module, x, missing, batch_index)
                info = self.target.info(module, full, positions)
                measured = full[MODULE_KEYS.OBSERVED_KEY] & (full[VALUES_KEY] != 0)
            expressed[positions] = measured.cpu().numpy()
            batch = Minibatch(x, missing, batch_index)
            attributions[positions] = self._batch(module, batch, info)
        return attributions, expressed

    def _batch(self, module, batch: Minibatch, info) -> np.ndarray:
        def score(out, *parts):
            return self.target.score(module, out, *parts)

        if self.method == "gradient_attention":
            values = gradient_attention(module, batch, score, info)
        elif self.method == "deletion":
            values = deletion(module, batch, score, info, DELETION_CHUNK)
        else:
            values, delta = integrated_gradients(module, batch, score, info, self.n_steps)
            self.abs_delta += float(delta.abs().sum())
            self.abs_difference += float((values.sum(1) - delta).abs().sum())
        return values.detach().float().cpu().numpy()


def _as_measured(module, x, missing, batch_index) -> dict:
    """Read samples as measured (fixed context, fused attention), with their log values.

    What a target's ``info`` reads: the reading at presence 1 without the explicit attention
    weights that only the attributions need.
    """
    out = module.inference(x, missing, batch_index, encoding={})
    out[VALUES_KEY] = module.prepare_values(x, missing)[0]
    return out


def _subsample(codes: np.ndarray, max_samples: int | None, seed: int) -> np.ndarray:
    """Sorted positions of at most ``max_samples`` random samples of each group."""
    if max_samples is None:
        return np.arange(len(codes))
    rng = np.random.default_rng(seed)
    kept = []
    for code in np.unique(codes):
        members = np.flatnonzero(codes == code)
        if len(members) > max_samples:
            members = rng.choice(members, max_samples, replace=False)
        kept.append(members)
    return np.sort(np.concatenate(kept))


def _group_table(
    names: np.ndarray,
    codes: np.ndarray,
    attributions: np.ndarray,
    expressed: np.ndarray,
    genes: pd.Index,
    versus_rest: bool,
) -> pd.DataFrame:
    """Per group and gene: mean attribution (minus the rest's), rank and expressed shares."""
    n_groups = len(names)
    sums = np.zeros((n_groups, attributions.shape[1]))
    counts = np.zeros((n_groups, attributions.shape[1]))
    np.add.at(sums, codes, attributions.astype(np.float64))
    np.add.at(counts, codes, expressed)
    sizes = np.bincount(codes, minlength=n_groups)[:, None].astype(np.float64)
    columns = {"group_score": sums / sizes, "expressed_fraction": counts / sizes}
    if versus_rest:
        rest = sizes.sum() - sizes
        columns["rest_score"] = (sums.sum(0) - sums) / rest
        columns["rest_expressed_fraction"] = (counts.sum(0) - counts) / rest
        columns["score"] = columns["group_score"] - columns["rest_score"]
    else:
        columns["score"] = columns.pop("group_score")
    table = pd.DataFrame(
        {
            "group": pd.Categorical(np.repeat(names, len(genes)), categories=names),
            "gene": np.tile(np.asarray(genes), n_groups),
            **{key: value.ravel() for key, value in columns.items()},
        }
    )
    ranks = table.groupby("group", observed=True)["score"].rank(ascending=False, method="first")
    table.insert(3, "rank", ranks.astype(int))
    order = ["group", "gene", "score", "rank"]
    return table[order + [c for c in table.columns if c not in order]]


class TargetReader:
    """The target of some samples, read again with chosen genes missing (deletion curves).

    Parameters
    ----------
    model
        A trained model of the GexBERT family.
    adata
        Data with the model's genes (``None``: the model's AnnData).
    rows
        The samples read.
    target
        As in :meth:`ImportanceMixin.get_gene_importance`.
    batch_size
        Samples per forward pass.
    """

    def __init__(
        self,
        model,
        adata: AnnData | MuData | None,
        rows: np.ndarray,
        target: str | None,
        batch_size: int | None,
    ):
        model._check_if_trained()
        self.module = model.module.eval()
        self.batch_size = model._resolve_batch_size(batch_size, None) or settings.batch_size
        self.target = model._importance_target(target, adata, rows)
        parts = [model._inference_input(t, None) for t in model.minibatches(adata, rows)]
        self.x = torch.cat([part[MODULE_KEYS.X_KEY] for part in parts])
        self.missing, self.batch_index = (
            None if parts[0][key] is None else torch.cat([part[key] for part in parts])
            for key in (MODULE_KEYS.MISSING_KEY, MODULE_KEYS.BATCH_KEY)
        )
        with torch.no_grad():
            full = _as_measured(self.module, self.x, self.missing, self.batch_index)
            self.info = self.target.info(self.module, full, np.arange(len(self.x)))

    @torch.inference_mode()
    def mean_readout(self, unread: np.ndarray) -> float:
        """Mean target (e.g. class probability) over the samples with the genes ``unread`` missing.

        Parameters
        ----------
        unread
            Boolean mask over the model's genes: these are read as missing (NaN).

        Returns
        -------
        The mean of the target's readout over the samples.
        """
        mask = torch.as_tensor(unread, device=self.x.device)
        total = 0.0
        for start in range(0, len(self.x), self.batch_size):
            part = slice(start, start + self.batch_size)
            x = self.x[part].masked_fill(mask, torch.nan)
            out = self.module.inference(
                x,
                None if self.missing is None else self.missing[part],
                None if self.batch_index is None else self.batch_index[part],
                encoding={},
            )
            score = self.target.score(self.module, out, *(t[part] for t in self.info))
            total += float(self.target.readout(score).sum())
        return total / len(self.x)
