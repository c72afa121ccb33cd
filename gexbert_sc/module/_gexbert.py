"""The GexBERT torch module: expression tokens, ``[CLS]`` encoder, cross-attention decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from gexbert_sc._constants import MODULE_KEYS, REGISTRY_KEYS
from gexbert_sc.data._normalization import to_model_scale
from gexbert_sc.module._attention import DecoderBlock, EncoderBlock


class GexBERTModule(BaseModuleClass):
    """Masked-expression transformer autoencoder :cite:p:`Jiang2025`.

    A token is a gene embedding plus the embedding of the gene's binned expression level
    (level 0 is reserved for exact zeros; level ``n_levels`` is the learned *missing*
    embedding), plus the gene's centred log value times a per-gene *value* vector. The last
    term is our addition to the paper's token: with additive gene + level embeddings alone the
    model needed thousands of steps to leave the "predict each gene's mean" plateau (measured
    on a rank-3 synthetic set: no progress in 1,500 steps), while with it the same model
    learned in 300. The decoder reads out a value as the dot product of its output with a
    per-gene output vector (a bilinear readout, as in a linear autoencoder). ``[CLS]`` starts
    from a linear projection of the whole observed profile (``profile_proj``, initialised with
    the data's principal axes), which made it a good sample summary within a few hundred steps.
    Context genes are drawn non-zero first (sparse profiles are mostly zeros); restoration
    targets are the hidden context genes plus random observed genes the encoder did not see,
    zeros included. A pre-LN encoder reads ``[CLS]`` + up to ``n_context`` observed genes; the
    ``[CLS]`` output is the sample embedding. Query tokens (gene embedding + missing embedding)
    read the encoder output by cross-attention and regress the gene's log-scale value; queries
    never attend to each other. A second, *bottleneck* decoder pass reads ``[CLS]`` alone, so
    that the embedding has to summarise the sample.

    Parameters
    ----------
    n_vars
        Vocabulary size (number of genes).
    n_batch
        Number of batches; a batch embedding is added to the decoder queries.
    d_model
        Token width.
    n_layers
        Encoder blocks.
    n_decoder_layers
        Decoder (cross-attention) blocks.
    n_heads
        Attention heads.
    n_levels
        Expression levels including the zero level (the missing level comes on top).
    n_context
        Observed genes per sample per training step.
    n_inference_context
        Observed genes per sample read at inference (chosen by a fixed gene priority, so the
        same input always gives the same output).
    mask_ratio
        Fraction of the training context hidden and restored.
    bottleneck_weight
        Weight of the restoration loss of the ``[CLS]``-only decoder pass.
    dropout
        Dropout rate in attention and feed-forward layers.
    is_counts
        Whether input values are counts (size-factor normalised and log1p'd inside).
    gene_share, bin_edges, gene_mean, principal_axes
        Fitted :class:`~gexbert_sc.data.ExpressionStatistics` arrays; placeholders when
        ``None`` (a loaded model overwrites them from its state dict). ``principal_axes``
        initialises the trainable profile projection.
    """

    def __init__(
        self,
        n_vars: int,
        n_batch: int = 1,
        *,
        d_model: int = 128,
        n_layers: int = 2,
        n_decoder_layers: int = 1,
        n_heads: int = 4,
        n_levels: int = 32,
        n_context: int = 256,
        n_inference_context: int = 1024,
        mask_ratio: float = 0.3,
        bottleneck_weight: float = 1.0,
        dropout: float = 0.0,
        is_counts: bool = False,
        gene_share: torch.Tensor | None = None,
        bin_edges: torch.Tensor | None = None,
        gene_mean: torch.Tensor | None = None,
        principal_axes: torch.Tensor | None = None,
    ):
        super().__init__()
        self.n_vars = n_vars
        self.n_levels = n_levels
        self.n_context = n_context
        self.n_inference_context = n_inference_context
        self.mask_ratio = mask_ratio
        self.bottleneck_weight = bottleneck_weight
        self._register_statistics(is_counts, gene_share, bin_edges, gene_mean)
        self.gene_emb = nn.Embedding(n_vars, d_model)
        self.value_emb = nn.Embedding(n_vars, d_model)
        self.gene_out = nn.Embedding(n_vars, d_model)
        self.level_emb = nn.Embedding(n_levels + 1, d_model)
        self.profile_proj = nn.Parameter(
            torch.randn(n_vars, d_model) if principal_axes is None else principal_axes.clone()
        )
        self.batch_emb = nn.Embedding(max(n_batch, 1), d_model)
        self.cls_token = nn.Parameter(torch.zeros(d_model))
        self.encoder = nn.ModuleList(
            EncoderBlock(d_model, n_heads, dropout) for _ in range(n_layers)
        )
        self.encoder_norm = nn.LayerNorm(d_model)
        self.decoder = nn.ModuleList(
            DecoderBlock(d_model, n_heads, dropout) for _ in range(n_decoder_layers)
        )
        self.output_norm = nn.LayerNorm(d_model)
        self.output_weight = nn.Parameter(torch.zeros(d_model))
        for weight in (self.gene_emb.weight, self.level_emb.weight, self.value_emb.weight):
            nn.init.normal_(weight, std=0.02)
        nn.init.normal_(self.gene_out.weight, std=0.02)
        nn.init.zeros_(self.batch_emb.weight)
        nn.init.zeros_(self.cls_token)

    def _register_statistics(self, is_counts, gene_share, bin_edges, gene_mean) -> None:
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

    # ------------------------------------------------------------------ tokens and encoder
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
        n_context: int,
        random: bool,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick up to ``n_context`` observed genes per sample, non-zero genes first.

        Sparse single-cell profiles are mostly zeros: a uniform draw of 128 of 4,000 genes
        carries little information, so non-zero genes are taken first (in random order while
        training, by the fixed ``gene_priority`` at inference) and zeros fill what remains.

        Returns ``(gene_idx, valid)``, both ``(B, L)``; ``valid`` is ``False`` on padding. At
        inference zeros fill only up to the training context size ``self.n_context`` and ``L``
        is trimmed to the longest context in the batch. ``generator`` draws the random order
        (the global RNG when ``None``).
        """
        if random:
            priority = torch.rand(observed.shape, device=observed.device, generator=generator)
        else:
            priority = self.gene_priority.expand_as(observed)
        priority = torch.where(observed, priority + nonzero.to(priority.dtype), -1.0)
        n_take = min(n_context, observed.shape[1])
        scores, gene_idx = priority.topk(n_take, dim=1, sorted=True)
        valid = scores >= 0
        if not random:
            # zeros fill the context only up to the training size, as they did in training:
            # a cell is read through all its non-zero genes (up to `n_context` here) but
            # never through hundreds of zero tokens it was not trained on
            n_nonzero = nonzero.sum(dim=1, keepdim=True)
            position = torch.arange(n_take, device=valid.device)
            valid &= position < torch.clamp(n_nonzero, min=self.n_context)
            n_keep = max(int(valid.sum(dim=1).max()), 1)
            gene_idx, valid = gene_idx[:, :n_keep], valid[:, :n_keep]
        return gene_idx, valid

    def profile_summary(self, y: torch.Tensor, include: torch.Tensor) -> torch.Tensor:
        """Linear projection of the centred log profile over the genes marked in ``include``.

        ``profile_proj`` is stored multiplied by ``sqrt(n_vars)`` (so that AdamW refines its
        entries instead of erasing them); with the factor ``sqrt(n_vars) / n_included`` the
        projection is rescaled by ``n_vars / n_included``, so that a partly observed profile
        projects to the same scale as a complete one (missing genes count as their mean).
        """
        centred = torch.where(include, y - self.gene_mean, 0.0)
        scale = self.n_vars**0.5 / include.sum(dim=1, keepdim=True).clamp_min(1)
        return (centred @ self.profile_proj) * scale

    def expression_levels(self, values: torch.Tensor, gene_idx: torch.Tensor) -> torch.Tensor:
        """Bin log-scale ``values`` of genes ``gene_idx`` (same shape) into level ids."""
        edges = self.bin_edges[gene_idx]
        levels = 1 + (values.unsqueeze(-1) > edges).sum(dim=-1)
        return torch.where(values == 0, torch.zeros_like(levels), levels)

    def encode(
        self,
        gene_idx: torch.Tensor,
        values: torch.Tensor,
        valid: torch.Tensor,
        summary: torch.Tensor,
        hidden: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the encoder over ``[CLS]`` + context tokens.

        Parameters
        ----------
        gene_idx, values, valid
            ``(B, L)`` context genes, their log-scale values, and ``False`` on padding.
        hidden
            ``(B, L)`` bool, tokens whose value is replaced by the missing embedding.

        Returns
        -------
        ``(memory, padding)``: ``(B, 1 + L, d)`` normalised encoder output (``[CLS]`` first)
        and the ``(B, 1 + L)`` padding mask.
        """
        levels = self.expression_levels(values, gene_idx)
        centred = values - self.gene_mean[gene_idx]
        if hidden is not None:
            levels = torch.where(hidden, self.n_levels, levels)
            centred = torch.where(hidden, 0.0, centred)
        value_part = centred.unsqueeze(-1) * self.value_emb(gene_idx)
        tokens = self.gene_emb(gene_idx) + self.level_emb(levels) + value_part
        cls = (self.cls_token + summary).unsqueeze(1)
        h = torch.cat([cls, tokens], dim=1)
        padding = torch.cat([valid.new_zeros(valid.shape[0], 1), ~valid], dim=1)
        for block in self.encoder:
            h = block(h, padding)
        return self.encoder_norm(h), padding

    # ------------------------------------------------------------------ decoder
    def restore(
        self,
        memory: torch.Tensor,
        padding: torch.Tensor | None,
        gene_idx: torch.Tensor,
        batch_index: torch.Tensor,
    ) -> torch.Tensor:
        """Predict log-scale values of genes ``gene_idx`` (``(Q,)`` or ``(B, Q)``) from memory.

        Each query reads the memory independently, so the value restored for a gene does not
        depend on which other genes are queried in the same call.
        """
        batch_size = memory.shape[0]
        if gene_idx.dim() == 1:
            gene_idx = gene_idx.expand(batch_size, -1)
        query = (
            self.gene_emb(gene_idx)
            + self.level_emb.weight[self.n_levels]
            + self.batch_emb(batch_index.view(-1).long()).unsqueeze(1)
        )
        for block in self.decoder:
            query = block(query, memory, padding)
        readout = self.gene_out(gene_idx) + self.output_weight
        return (self.output_norm(query) * readout).sum(-1) + self.gene_mean[gene_idx]

    # ------------------------------------------------------------------ scvi-tools protocol
    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict:
        return {
            MODULE_KEYS.X_KEY: tensors[REGISTRY_KEYS.X_KEY],
            MODULE_KEYS.MISSING_KEY: tensors.get(REGISTRY_KEYS.MISSING_KEY),
            MODULE_KEYS.BATCH_KEY: tensors[REGISTRY_KEYS.BATCH_KEY],
        }

    @auto_move_data
    def inference(
        self,
        x: torch.Tensor,
        missing: torch.Tensor | None = None,
        batch_index: torch.Tensor | None = None,
        apply_mask: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Tokenise, hide a random part of a random context (training), and encode.

        ``apply_mask`` defaults to ``self.training``; validation passes ``True`` so that the
        validation loss is a real restoration loss. Without masking, a ``generator`` replaces
        the fixed inference context by a random one drawn from it as in training (up to
        ``n_context`` observed genes, ``mask_ratio`` of them hidden, also from the profile
        summary); restorations from several such contexts show how much a value depends on
        which genes are read.
        """
        apply_mask = self.training if apply_mask is None else apply_mask
        y, observed, factors = self.prepare_values(x, missing)
        nonzero = observed & (y != 0)
        out = {
            MODULE_KEYS.TARGET_IDX_KEY: None,
            MODULE_KEYS.BATCH_KEY: batch_index,
            MODULE_KEYS.OBSERVED_KEY: observed,
            MODULE_KEYS.SIZE_FACTOR_KEY: factors,
        }
        include = observed
        if apply_mask or generator is not None:
            gene_idx, valid = self.select_context(
                observed, nonzero, self.n_context, True, generator
            )
            hidden = self._hide(valid, generator)
            # the summary must not see what is hidden (or, in training, to be restored)
            include = observed.scatter(1, gene_idx, observed.gather(1, gene_idx) & ~hidden)
            if apply_mask:
                targets = self._draw_targets(y, observed, gene_idx, valid, hidden)
                out.update(targets)
                target_idx = targets[MODULE_KEYS.TARGET_IDX_KEY]
                target_valid = targets[MODULE_KEYS.TARGET_VALID_KEY]
                unseen = include.gather(1, target_idx) & ~target_valid
                include = include.scatter(1, target_idx, unseen)
        else:
            n_context = self.n_inference_context
            gene_idx, valid = self.select_context(observed, nonzero, n_context, False)
            hidden = None
        values = y.gather(1, gene_idx)
        summary = self.profile_summary(y, include)
        memory, padding = self.encode(gene_idx, values, valid, summary, hidden)
        out[MODULE_KEYS.MEMORY_KEY] = memory
        out[MODULE_KEYS.MEMORY_PAD_KEY] = padding
        out[MODULE_KEYS.Z_KEY] = memory[:, 0]
        return out

    def _hide(self, valid: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Hide ``mask_ratio`` of each sample's context tokens (never padding)."""
        n_hidden = max(1, round(self.mask_ratio * valid.shape[1]))
        draws = torch.rand(valid.shape, device=valid.device, generator=generator)
        scores = torch.where(valid, draws, -1.0)
        hidden_pos = scores.topk(n_hidden, dim=1).indices
        return torch.zeros_like(valid).scatter(1, hidden_pos, True) & valid

    def _draw_targets(
        self,
        y: torch.Tensor,
        observed: torch.Tensor,
        gene_idx: torch.Tensor,
        valid: torch.Tensor,
        hidden: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Draw ``n_context`` restoration targets per sample.

        Every hidden context gene comes first, then random observed genes the encoder did not
        see (zeros included).
        """
        visible = torch.zeros_like(observed).scatter(1, gene_idx, valid & ~hidden)
        was_hidden = torch.zeros_like(observed).scatter(1, gene_idx, hidden)
        priority = torch.rand(observed.shape, device=observed.device) + was_hidden.float()
        priority = torch.where(observed & ~visible, priority, -1.0)
        scores, target_idx = priority.topk(min(gene_idx.shape[1], observed.shape[1]), dim=1)
        return {
            MODULE_KEYS.TARGET_IDX_KEY: target_idx,
            MODULE_KEYS.TARGET_KEY: y.gather(1, target_idx),
            MODULE_KEYS.TARGET_VALID_KEY: scores >= 0,
        }

    def _get_generative_input(self, tensors, inference_outputs, **kwargs) -> dict:
        keys = (
            MODULE_KEYS.MEMORY_KEY,
            MODULE_KEYS.MEMORY_PAD_KEY,
            MODULE_KEYS.TARGET_IDX_KEY,
            MODULE_KEYS.BATCH_KEY,
        )
        return {key: inference_outputs[key] for key in keys}

    @auto_move_data
    def generative(
        self,
        memory: torch.Tensor,
        memory_pad: torch.Tensor,
        target_idx: torch.Tensor | None,
        batch_index: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Restore the targets from the whole memory, and again from ``[CLS]`` alone."""
        if target_idx is None:
            return {}
        out = {MODULE_KEYS.PRED_KEY: self.restore(memory, memory_pad, target_idx, batch_index)}
        if self.bottleneck_weight > 0:
            out[MODULE_KEYS.PRED_BOTTLENECK_KEY] = self.restore(
                memory[:, :1], None, target_idx, batch_index
            )
        return out

    def loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """Masked restoration MSE on log-scale values (+ weighted ``[CLS]``-only MSE)."""
        se, weight = _masked_squared_error(
            generative_outputs[MODULE_KEYS.PRED_KEY],
            inference_outputs[MODULE_KEYS.TARGET_KEY],
            inference_outputs[MODULE_KEYS.TARGET_VALID_KEY],
        )
        masked_mse = se.sum() / weight.sum().clamp_min(1.0)
        loss = masked_mse
        metrics = {"masked_mse": masked_mse.detach()}
        if MODULE_KEYS.PRED_BOTTLENECK_KEY in generative_outputs:
            se_b, weight_b = _masked_squared_error(
                generative_outputs[MODULE_KEYS.PRED_BOTTLENECK_KEY],
                inference_outputs[MODULE_KEYS.TARGET_KEY],
                inference_outputs[MODULE_KEYS.TARGET_VALID_KEY],
            )
            bottleneck_mse = se_b.sum() / weight_b.sum().clamp_min(1.0)
            loss = loss + self.bottleneck_weight * bottleneck_mse
            metrics["bottleneck_mse"] = bottleneck_mse.detach()
        per_sample = se.sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)
        return LossOutput(loss=loss, reconstruction_loss=per_sample, extra_metrics=metrics)


def _masked_squared_error(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared errors zeroed where ``valid`` is ``False``, and the float weights."""
    weight = valid.to(target.dtype)
    return F.mse_loss(pred.float(), target, reduction="none") * weight, weight
