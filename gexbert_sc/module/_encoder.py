"""The GexBERT encoder: expression tokens, context choice, profile summary and ``[CLS]`` encoder."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from scvi.module.base import auto_move_data
from torch import nn

from gexbert_sc._constants import MODULE_KEYS
from gexbert_sc.data._normalization import to_input_scale, to_model_scale
from gexbert_sc.module._attention import AttentionRows, EncoderBlock
from gexbert_sc.module._masking import draw_targets as draw_restoration_targets
from gexbert_sc.module._masking import hide_tokens, withhold_genes, withhold_outside_panel

ContextPolicy = Literal["fixed", "random"]
#: ridge of the profile fit, relative to the basis' mean squared norm per observed share
#: buffers bounding restorations (absent from models saved before they were fitted: unbounded there)
RESTORATION_BOUNDS = ("gene_min", "gene_max", "max_size_factor")
PROFILE_RIDGE = 0.3


class ExpressionEncoder(nn.Module):
    """Tokenise expression profiles and encode ``[CLS]`` + context genes (see :doc:`/design`).

    A token is a gene embedding plus the embedding of the gene's binned expression level
    (level 0 is reserved for exact zeros; level ``n_levels`` is the learned *missing*
    embedding), plus the gene's centred log value times a per-gene *value* vector. ``[CLS]``
    starts from a linear projection of the whole observed profile (``profile_proj``,
    initialised with the data's principal axes). Context genes are drawn non-zero first. The
    ``[CLS]`` output is the sample embedding.

    Parameters
    ----------
    n_vars
        Vocabulary size (number of genes).
    d_model
        Token width.
    n_layers
        Encoder blocks.
    n_heads
        Attention heads.
    n_levels
        Expression levels including the zero level (the missing level comes on top).
    n_context
        Observed genes per sample in a random context (training).
    n_inference_context
        Observed genes per sample in the fixed context (inference; chosen by a fixed gene
        priority, so the same input always gives the same output).
    dropout
        Dropout rate in attention and feed-forward layers.
    is_counts
        Whether input values are counts (size-factor normalised and log1p'd inside).
    profile_fit
        Summarise the profile by a ridge least-squares fit on the profile basis
        (:meth:`profile_summary`), whose reconstruction the decoder adds to its restorations;
        ``False`` is the rescaled projection of models saved before 0.2.
    cls_summary
        Add the profile summary to the ``[CLS]`` token's input. ``False`` starts ``[CLS]``
        from ``cls_token`` alone, so that it learns about the sample only by attention (the
        decoder still adds the profile fit's reconstruction); see :doc:`/interpretability`.
    gene_share, bin_edges, gene_mean, principal_axes, gene_min, gene_max, max_size_factor
        Fitted :class:`~gexbert_sc.data.ExpressionStatistics` arrays; placeholders when
        ``None`` (a loaded or pretrained model overwrites them from its state dict).
        ``principal_axes`` initialises the trainable profile projection; ``gene_min``,
        ``gene_max`` and ``max_size_factor`` bound restorations (:meth:`bound_restoration`;
        unbounded by default, as in a model saved before they were fitted).
    """

    def __init__(
        self,
        n_vars: int,
        *,
        d_model: int = 128,
        n_layers: int = 2,
        n_heads: int = 4,
        n_levels: int = 32,
        n_context: int = 256,
        n_inference_context: int = 256,
        dropout: float = 0.0,
        is_counts: bool = False,
        profile_fit: bool = True,
        cls_summary: bool = True,
        gene_share: torch.Tensor | None = None,
        bin_edges: torch.Tensor | None = None,
        gene_mean: torch.Tensor | None = None,
        principal_axes: torch.Tensor | None = None,
        gene_min: torch.Tensor | None = None,
        gene_max: torch.Tensor | None = None,
        max_size_factor: float | None = None,
    ):
        super().__init__()
        self.n_vars = n_vars
        self.n_levels = n_levels
        self.n_context = n_context
        self.n_inference_context = n_inference_context
        self.n_heads = n_heads
        self.dropout = dropout
        self.profile_fit = profile_fit
        self.cls_summary = cls_summary
        self._register_statistics(is_counts, gene_share, bin_edges, gene_mean)
        self._register_restoration_bounds(gene_min, gene_max, max_size_factor)
        self.gene_emb = nn.Embedding(n_vars, d_model)
        self.value_emb = nn.Embedding(n_vars, d_model)
        self.level_emb = nn.Embedding(n_levels + 1, d_model)
        self.profile_proj = nn.Parameter(
            torch.randn(n_vars, d_model) if principal_axes is None else principal_axes.clone()
        )
        self.cls_token = nn.Parameter(torch.zeros(d_model))
        self.encoder = nn.ModuleList(
            EncoderBlock(d_model, n_heads, dropout) for _ in range(n_layers)
        )
        self.encoder_norm = nn.LayerNorm(d_model)
        for weight in (self.gene_emb.weight, self.level_emb.weight, self.value_emb.weight):
            nn.init.normal_(weight, std=0.02)
        # the parameters a task head fine-tunes or freezes (a subclass adds its own after)
        self.encoder_parameter_names = tuple(name for name, _ in self.named_parameters())

    def _register_statistics(
        self,
        is_counts: bool,
        gene_share: torch.Tensor | None,
        bin_edges: torch.Tensor | None,
        gene_mean: torch.Tensor | None,
    ) -> None:
        n_vars, n_edges = self.n_vars, self.n_levels - 2
        self.register_buffer("input_is_counts", torch.tensor(bool(is_counts)))
        self.register_buffer(
            "gene_share",
            torch.full((n_vars,), 1.0 / n_vars) if gene_share is None else gene_share.float(),
        )
        self.register_buffer(
            "bin_edges",
            torch.zeros(n_vars, n_edges) if bin_edges is None else bin_edges.float(),
        )
        self.register_buffer(
            "gene_mean", torch.zeros(n_vars) if gene_mean is None else gene_mean.float()
        )
        # A fixed gene order decides which observed genes are read at inference when a sample
        # has more than `n_inference_context`; it never depends on the global RNG.
        priority = torch.randperm(n_vars, generator=torch.Generator().manual_seed(0))
        self.register_buffer("gene_priority", priority.float() / n_vars)

    def _register_restoration_bounds(
        self,
        gene_min: torch.Tensor | None,
        gene_max: torch.Tensor | None,
        max_size_factor: float | None,
    ) -> None:
        infinite = torch.full((self.n_vars,), torch.inf)
        self.register_buffer("gene_min", -infinite if gene_min is None else gene_min.float())
        self.register_buffer("gene_max", infinite if gene_max is None else gene_max.float())
        factor = torch.inf if max_size_factor is None else float(max_size_factor)
        self.register_buffer("max_size_factor", torch.tensor(factor))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # a model saved before the restoration bounds were fitted keeps restoring unbounded
        for name in RESTORATION_BOUNDS:
            state_dict.setdefault(prefix + name, getattr(self, name).clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def bound_restoration(self, restored: torch.Tensor, gene_idx: torch.Tensor) -> torch.Tensor:
        """Clip log-scale restorations to the range the training data held for each gene.

        Parameters
        ----------
        restored
            ``(B, G')`` log-scale restorations of the genes ``gene_idx``.
        gene_idx
            ``(G',)`` vocabulary positions.

        Returns
        -------
        ``restored`` clipped to ``[gene_min, gene_max]`` of each gene: the decoder never
        restores a gene beyond the smallest or largest normalised value it had in training.
        """
        low, high = self.gene_min[gene_idx], self.gene_max[gene_idx]
        return torch.minimum(torch.maximum(restored, low), high)

    def restoration_ceiling(self, gene_idx: torch.Tensor) -> torch.Tensor:
        """Largest input-scale value a restoration of each gene may take.

        For counts: the gene's largest training level at the largest training size factor,
        ``expm1(gene_max) * max_size_factor / 1e4``, so that a query whose observed genes
        give an implausible library size (a few counts in genes of near-zero share) cannot
        restore more than the deepest training sample held; for log-scale input, ``gene_max``.

        Parameters
        ----------
        gene_idx
            ``(G',)`` vocabulary positions.

        Returns
        -------
        ``(G',)`` ceilings (``inf`` for a model saved before the bounds were fitted).
        """
        high = self.gene_max[gene_idx][None]
        return to_input_scale(high, self.max_size_factor[None], bool(self.input_is_counts))[0]

    @property
    def profile_basis(self) -> torch.Tensor:
        """The ``(G, d)`` profile basis ``M = P / sqrt(n_vars)`` (see :meth:`profile_summary`)."""
        return self.profile_proj / self.n_vars**0.5

    @property
    def d_model(self) -> int:
        """Token width (the size of the sample embedding)."""
        return self.cls_token.shape[0]

    # ------------------------------------------------------------------ tokens
    def prepare_values(
        self, x: torch.Tensor, missing: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return log-scale values, the observed mask and size factors of raw inputs ``x``."""
        observed = ~torch.isnan(x)
        if missing is not None:
            observed &= missing < 0.5
        y, factors = to_model_scale(x, observed, self.gene_share, bool(self.input_is_counts))
        return y, observed, factors

    def select_context(
        self,
        observed: torch.Tensor,
        nonzero: torch.Tensor,
        size: int,
        random: bool,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick up to ``size`` observed genes per sample, non-zero genes first.

        Sparse single-cell profiles are mostly zeros: a uniform draw of 128 of 4,000 genes
        carries little information, so non-zero genes are taken first (in random order drawn
        from ``generator`` when ``random``, by the fixed ``gene_priority`` otherwise) and zeros
        fill what remains.

        Returns ``(gene_idx, valid)``, both ``(B, L)``; ``valid`` is ``False`` on padding. In
        the fixed context zeros fill only up to the training context size ``n_context`` and
        ``L`` is trimmed to the longest context in the batch.
        """
        if random:
            priority = torch.rand(observed.shape, device=observed.device, generator=generator)
        else:
            priority = self.gene_priority.expand_as(observed)
        priority = torch.where(observed, priority + nonzero.to(priority.dtype), -1.0)
        n_take = min(size, observed.shape[1])
        scores, gene_idx = priority.topk(n_take, dim=1, sorted=True)
        valid = scores >= 0
        if not random:
            position = torch.arange(n_take, device=valid.device)
            valid &= position < self.fixed_context_length(observed, nonzero, size).unsqueeze(1)
            n_keep = max(int(valid.sum(dim=1).max()), 1)
            gene_idx, valid = gene_idx[:, :n_keep], valid[:, :n_keep]
        return gene_idx, valid

    def fixed_context_length(
        self, observed: torch.Tensor, nonzero: torch.Tensor, size: int
    ) -> torch.Tensor:
        """Return the number of genes in each sample's fixed context of at most ``size``, ``(B,)``.

        Zeros fill the context only up to the training size ``n_context``, as they did in
        training: a sample is read through all its non-zero genes (up to ``size``) but never
        through hundreds of zero tokens it was not trained on.
        """
        n_nonzero = nonzero.sum(dim=1)
        length = torch.clamp(n_nonzero, min=self.n_context).clamp(max=size)
        return torch.minimum(length, observed.sum(dim=1))

    @auto_move_data
    def inference_context_lengths(
        self, x: torch.Tensor, missing: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the number of context genes each sample is read through at inference.

        The getters sort samples by it so that a minibatch holds contexts of similar length
        and little padding.

        Parameters
        ----------
        x, missing
            As in :meth:`encode_samples`.

        Returns
        -------
        ``(B,)`` int64 lengths, at most ``n_inference_context``.
        """
        y, observed, _ = self.prepare_values(x, missing)
        return self.fixed_context_length(observed, observed & (y != 0), self.n_inference_context)

    def profile_summary(
        self, y: torch.Tensor, include: torch.Tensor, weight: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Summary of the centred log profile over the genes marked in ``include``.

        ``profile_proj`` (``P``) is stored multiplied by ``sqrt(n_vars)`` (so that AdamW
        refines its entries instead of erasing them); ``M = P / sqrt(n_vars)`` is the basis.
        The rescaled projection ``r = (G / |O|) M_Oᵀ (y_O - ȳ_O)`` treats a missing gene as
        its mean. With ``profile_fit`` the summary is instead ``MᵀM c``, where ``c`` is the
        ridge least-squares fit of the included genes on the basis,
        ``c = ((G/|O|) M_Oᵀ M_O + λ (G/|O|) I)⁻¹ r`` with ``λ = PROFILE_RIDGE`` times the
        mean of ``diag(MᵀM)``: the projection of the profile's low-rank reconstruction,
        which does not depend on which genes are missing, and whose prior grows as fewer
        genes are observed.

        ``weight`` ``(B, G)`` (in ``[0, 1]``, 0 outside ``include``) weighs each included
        gene's part in ``r`` and ``M_Oᵀ M_O`` while ``|O|`` stays the count of included genes:
        the summary is then linear in the weights of ``r``, continuous from every gene present
        (weights 1: the summary above) to none (weights 0: a zero summary), the path along
        which gene attributions integrate.

        Returns
        -------
        ``(summary, coef)``: the ``(B, d)`` summary and the ``(B, d)`` fitted coefficients
        ``c`` (``None`` without ``profile_fit``).
        """
        centred = torch.where(include, y - self.gene_mean, 0.0)
        if weight is not None:
            centred = centred * weight
        share = self.n_vars / include.sum(dim=1, keepdim=True).clamp_min(1)
        summary = (centred @ self.profile_proj) * share / self.n_vars**0.5
        if not self.profile_fit:
            return summary, None
        basis = self.profile_basis
        gram = basis.T @ basis
        if weight is None:
            partial = _partial_gram(basis, gram, include)
        else:
            partial = torch.einsum("bg,gd,ge->bde", weight.to(basis.dtype), basis, basis)
        ridge = PROFILE_RIDGE * gram.diagonal().mean()
        eye = torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype)
        share = share.unsqueeze(-1)
        system = (partial + ridge * eye) * share
        coef = torch.linalg.solve(system, summary.unsqueeze(-1)).squeeze(-1)
        return coef @ gram, coef

    def expression_levels(self, values: torch.Tensor, gene_idx: torch.Tensor) -> torch.Tensor:
        """Bin log-scale ``values`` of genes ``gene_idx`` (same shape) into level ids."""
        edges = self.bin_edges[gene_idx]
        levels = 1 + (values.unsqueeze(-1) > edges).sum(dim=-1)
        return torch.where(values == 0, torch.zeros_like(levels), levels)

    # ------------------------------------------------------------------ encoder
    def encode(
        self,
        gene_idx: torch.Tensor,
        values: torch.Tensor,
        valid: torch.Tensor,
        summary: torch.Tensor,
        hidden: torch.Tensor | None = None,
        attention: AttentionRows | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Run the encoder over ``[CLS]`` + context tokens.

        Parameters
        ----------
        gene_idx, values, valid
            ``(B, L)`` context genes, their log-scale values, and ``False`` on padding.
        summary
            ``(B, d)`` profile summary added to ``[CLS]``.
        hidden
            ``(B, L)`` bool, tokens whose value is replaced by the missing embedding.
        attention
            Also return the attention weights of every block: ``"cls"``, the ``[CLS]`` row;
            ``"all"``, every row (for attention rollout).

        Returns
        -------
        ``(memory, padding, attention)``: ``(B, 1 + L, d)`` normalised encoder output
        (``[CLS]`` first), the ``(B, 1 + L)`` padding mask, and the attention weights
        (``None`` unless ``attention``): ``(B, n_layers, n_heads, 1 + L)`` for ``"cls"``,
        ``(B, n_layers, n_heads, 1 + L, 1 + L)`` for ``"all"``.
        """
        h = self.input_tokens(gene_idx, values, summary, hidden)
        padding = torch.cat([valid.new_zeros(valid.shape[0], 1), ~valid], dim=1)
        weights = []
        for block in self.encoder:
            if attention is None:
                h = block(h, padding)
            else:
                h, block_weights = block(h, padding, attention)
                weights.append(block_weights)
        stacked = None if attention is None else torch.stack(weights, dim=1)
        return self.encoder_norm(h), padding, stacked

    def input_tokens(
        self,
        gene_idx: torch.Tensor,
        values: torch.Tensor,
        summary: torch.Tensor,
        hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Build the encoder's input: ``[CLS]``, then a token per context gene, ``(B, 1 + L, d)``.

        Parameters
        ----------
        gene_idx, values, summary, hidden
            As in :meth:`encode`.

        Returns
        -------
        ``[CLS]`` (``cls_token``, plus the profile summary with ``cls_summary``) followed by
        each gene's token: gene embedding + level embedding + centred value times the gene's
        value vector (the missing level and no value where ``hidden``).
        """
        levels = self.expression_levels(values, gene_idx)
        centred = values - self.gene_mean[gene_idx]
        if hidden is not None:
            levels = torch.where(hidden, self.n_levels, levels)
            centred = torch.where(hidden, 0.0, centred)
        value_part = centred.unsqueeze(-1) * self.value_emb(gene_idx)
        tokens = self.gene_emb(gene_idx) + self.level_emb(levels) + value_part
        cls = self.cls_token + summary if self.cls_summary else self.cls_token.expand_as(summary)
        return torch.cat([cls.unsqueeze(1), tokens], dim=1)

    def encode_samples(
        self,
        x: torch.Tensor,
        missing: torch.Tensor | None = None,
        batch_index: torch.Tensor | None = None,
        *,
        context: ContextPolicy = "fixed",
        hide_fraction: float = 0.0,
        draw_targets: bool = False,
        withhold: tuple[float, float] | None = None,
        panel_min_genes: int | None = None,
        generator: torch.Generator | None = None,
        attention: AttentionRows | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Encode samples: choose each sample's context, hide part of it, run the encoder.

        The one entry point for pretraining, heads and inference.

        Parameters
        ----------
        x
            ``(B, G)`` raw input values, NaN where missing.
        missing
            Optional ``(B, G)`` mask, ``>= 0.5`` where missing.
        batch_index
            ``(B, 1)`` batch codes (passed through for the decoder).
        context
            ``"fixed"``: up to ``n_inference_context`` observed genes by the fixed gene
            priority (deterministic); ``"random"``: up to ``n_context`` observed genes in a
            random order drawn from ``generator``, as in training. Non-zero genes first in
            both.
        hide_fraction
            Fraction of the context whose values are replaced by the missing embedding (and
            left out of the profile summary), drawn from ``generator``.
        draw_targets
            Draw restoration targets (the hidden genes, then the withheld genes, or without
            ``withhold`` observed genes the encoder did not see, drawn from ``generator``);
            they are left out of the profile summary.
        withhold
            ``(low, high)``: withhold a share of each sample's observed genes drawn uniformly
            in this range, irrespective of their values (:func:`withhold_genes`), before the
            context is chosen: they are missing to the encoder and the summary, as genes a
            sample did not measure are at inference.
        panel_min_genes
            Instead of ``withhold``: keep a random panel of each sample's observed genes,
            log-uniform in size from ``panel_min_genes`` to all of them, and withhold the rest
            (:func:`withhold_outside_panel`; the panel dropout of task models).
        generator
            Source of every random draw of the call (``None``: torch's global RNG).
        attention
            Also return the attention weights of every block (:meth:`encode`): ``"cls"``,
            the ``[CLS]`` row; ``"all"``, every row. They are computed by an unfused path
            beside the fused kernel, which still computes the tokens.

        Returns
        -------
        A dict under :data:`~gexbert_sc._constants.MODULE_KEYS`: the embedding ``z``, the
        encoder ``memory`` and its padding, the context genes and their validity, the hidden
        tokens, the observed mask and size factors, the target indices (``None`` unless
        ``draw_targets``) with their values and validity, and the ``[CLS]`` attention
        weights (with ``attention``).
        """
        if context not in get_args(ContextPolicy):
            msg = f"`context` must be one of {get_args(ContextPolicy)}, got {context!r}."
            raise ValueError(msg)
        if not 0 <= hide_fraction < 1:
            msg = f"`hide_fraction` must be in [0, 1), got {hide_fraction!r}."
            raise ValueError(msg)
        y, observed, factors = self.prepare_values(x, missing)
        if withhold is not None and panel_min_genes is not None:
            msg = "Pass either `withhold` or `panel_min_genes`, not both."
            raise ValueError(msg)
        withheld = None
        if withhold is not None:
            withheld = withhold_genes(observed, withhold, generator)
        elif panel_min_genes is not None:
            withheld = withhold_outside_panel(observed, panel_min_genes, generator)
        readable = observed if withheld is None else observed & ~withheld
        nonzero = readable & (y != 0)
        random = context == "random"
        size = self.n_context if random else self.n_inference_context
        gene_idx, valid = self.select_context(readable, nonzero, size, random, generator)
        hidden = hide_tokens(valid, hide_fraction, generator)
        # the summary must not see what is hidden, nor what is to be restored
        include = readable.scatter(1, gene_idx, readable.gather(1, gene_idx) & ~hidden)
        out = {
            MODULE_KEYS.TARGET_IDX_KEY: None,
            MODULE_KEYS.BATCH_KEY: batch_index,
            MODULE_KEYS.OBSERVED_KEY: observed,
            MODULE_KEYS.SIZE_FACTOR_KEY: factors,
            MODULE_KEYS.CONTEXT_IDX_KEY: gene_idx,
            MODULE_KEYS.CONTEXT_VALID_KEY: valid,
            MODULE_KEYS.HIDDEN_KEY: hidden,
        }
        if draw_targets:
            targets = draw_restoration_targets(
                y, observed, gene_idx, valid, hidden, generator, withheld
            )
            out.update(targets)
            target_idx = targets[MODULE_KEYS.TARGET_IDX_KEY]
            unseen = include.gather(1, target_idx) & ~targets[MODULE_KEYS.TARGET_VALID_KEY]
            include = include.scatter(1, target_idx, unseen)
        summary, coef = self.profile_summary(y, include)
        out[MODULE_KEYS.PROFILE_COEF_KEY] = coef
        memory, padding, weights = self.encode(
            gene_idx,
            y.gather(1, gene_idx),
            valid,
            summary,
            hidden if hide_fraction > 0 else None,
            attention,
        )
        out[MODULE_KEYS.MEMORY_KEY] = memory
        out[MODULE_KEYS.MEMORY_PAD_KEY] = padding
        out[MODULE_KEYS.Z_KEY] = memory[:, 0]
        if attention is not None:
            out[MODULE_KEYS.ATTENTION_KEY] = weights
        return out


def _partial_gram(basis: torch.Tensor, gram: torch.Tensor, include: torch.Tensor) -> torch.Tensor:
    """``(B, d, d)`` Gram matrices ``M_Oᵀ M_O`` of the basis rows of each sample's genes ``O``.

    Computed from whichever is smaller in the batch, the included genes or the excluded ones
    (``gram`` minus their Gram matrix): a sample with every gene observed costs nothing, one
    with a small panel only its panel, instead of all genes for every sample.
    """
    n_included = include.sum(dim=1)
    from_excluded = int((include.shape[1] - n_included).max()) < int(n_included.max())
    rows = ~include if from_excluded else include
    n_rows = int(rows.sum(dim=1).max())
    picked = rows.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :n_rows]
    selected = basis[picked] * rows.gather(1, picked).unsqueeze(-1).to(basis.dtype)
    part = selected.transpose(1, 2) @ selected
    return gram - part if from_excluded else part
