"""The GexBERT torch module: the expression encoder plus a cross-attention restoration decoder."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn

from gexbert_sc._constants import MODULE_KEYS, REGISTRY_KEYS
from gexbert_sc.module._attention import DecoderBlock
from gexbert_sc.module._encoder import ExpressionEncoder


class GexBERTModule(ExpressionEncoder, BaseModuleClass):
    """Masked-expression transformer autoencoder :cite:p:`Jiang2025`.

    The :class:`~gexbert_sc.module.ExpressionEncoder` reads ``[CLS]`` + up to ``n_context``
    observed genes; query tokens (gene embedding + missing embedding + batch embedding) read
    its output by cross-attention and regress each gene's log-scale value as the dot product
    of the decoder output with a per-gene output vector; queries never attend to each other.
    Pretraining withholds a random share of each sample's observed genes (whatever their
    values, as a panel misses genes), reads a random context of the rest, and restores the
    withheld genes; the restoration adds the low-rank reconstruction of the profile fit
    (:meth:`~gexbert_sc.module.ExpressionEncoder.profile_summary`).
    A second, *bottleneck* decoder pass reads
    ``[CLS]`` alone, without the fit's reconstruction, so that the embedding has to summarise
    the sample. The reasons for each
    choice, with measurements, are in :doc:`/design`.

    Parameters
    ----------
    n_vars
        Vocabulary size (number of genes).
    n_batch
        Number of batches; a batch embedding is added to the decoder queries.
    n_decoder_layers
        Decoder (cross-attention) blocks.
    mask_ratio
        Fraction of the training context hidden (replaced by the missing embedding) and
        restored.
    withhold_range
        Range of the share of each sample's observed genes withheld per training step,
        irrespective of their values, and restored (see :doc:`/design`); ``None`` restores
        observed genes outside the context instead (the scheme of models saved before 0.2).
    bottleneck_weight
        Weight of the restoration loss of the ``[CLS]``-only decoder pass.
    **encoder_kwargs
        Arguments of :class:`~gexbert_sc.module.ExpressionEncoder` (``d_model``,
        ``n_layers``, ``n_heads``, ``n_levels``, ``n_context``, ``n_inference_context``,
        ``dropout``, ``is_counts`` and the fitted statistics); the decoder blocks use the same
        width, heads and dropout.
    """

    def __init__(
        self,
        n_vars: int,
        n_batch: int = 1,
        *,
        n_decoder_layers: int = 1,
        mask_ratio: float = 0.0,
        withhold_range: tuple[float, float] | None = (0.1, 0.9),
        bottleneck_weight: float = 1.0,
        **encoder_kwargs: Any,
    ):
        super().__init__(n_vars, **encoder_kwargs)
        d_model, n_heads, dropout = self.d_model, self.n_heads, self.dropout
        self.mask_ratio = mask_ratio
        self.withhold_range = None if withhold_range is None else tuple(withhold_range)
        self.bottleneck_weight = bottleneck_weight
        self.gene_out = nn.Embedding(n_vars, d_model)
        self.batch_emb = nn.Embedding(max(n_batch, 1), d_model)
        self.decoder = nn.ModuleList(
            DecoderBlock(d_model, n_heads, dropout) for _ in range(n_decoder_layers)
        )
        self.output_norm = nn.LayerNorm(d_model)
        self.output_weight = nn.Parameter(torch.zeros(d_model))
        nn.init.normal_(self.gene_out.weight, std=0.02)
        nn.init.zeros_(self.batch_emb.weight)

    @property
    def sampling_encoding(self) -> dict[str, Any]:
        """:meth:`encode_samples` arguments of a random context drawn as in training.

        A random context of the genes left after withholding, with ``mask_ratio`` of it
        hidden, without targets; restorations from several such contexts give the spread of
        ``tl.impute(n_samples=...)``.
        """
        return {
            "context": "random",
            "hide_fraction": self.mask_ratio,
            "withhold": self.withhold_range,
        }

    @property
    def training_encoding(self) -> dict[str, Any]:
        """:meth:`encode_samples` arguments of a pretraining step (without the generator)."""
        return {**self.sampling_encoding, "draw_targets": True}

    @property
    def validation_encoding(self) -> dict[str, Any]:
        """:meth:`encode_samples` arguments of a validation step: masked, as in training.

        The training plan reads this, so that ``validation_loss`` is a real restoration loss
        (with the deterministic inference context nothing would be hidden); a task module
        returns its own.
        """
        return self.training_encoding

    # ------------------------------------------------------------------ decoder
    def restore(
        self,
        memory: torch.Tensor,
        padding: torch.Tensor | None,
        gene_idx: torch.Tensor,
        batch_index: torch.Tensor,
        profile_coef: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict log-scale values of genes ``gene_idx`` (``(Q,)`` or ``(B, Q)``) from memory.

        Each query reads the memory independently, so the value restored for a gene does not
        depend on which other genes are queried in the same call. With ``profile_coef`` (the
        profile fit of :meth:`encode_samples`), the basis reconstruction ``M_g · c`` is added:
        the decoder learns what the low-rank fit misses.
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
        pred = (self.output_norm(query) * readout).sum(-1) + self.gene_mean[gene_idx]
        if profile_coef is not None:
            basis = self.profile_basis[gene_idx]
            pred = pred + (basis * profile_coef.unsqueeze(1)).sum(-1)
        return pred

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
        encoding: dict[str, Any] | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Encode a minibatch (scvi-tools protocol): :meth:`encode_samples` with ``encoding``.

        ``encoding`` defaults to :attr:`training_encoding` in training mode and to the fixed,
        deterministic inference context in eval mode; the training plan passes it explicitly,
        with its generator.
        """
        if encoding is None:
            encoding = self.training_encoding if self.training else {}
        return self.encode_samples(x, missing, batch_index, **encoding)

    def _get_generative_input(self, tensors, inference_outputs, **kwargs) -> dict:
        keys = (
            MODULE_KEYS.MEMORY_KEY,
            MODULE_KEYS.MEMORY_PAD_KEY,
            MODULE_KEYS.TARGET_IDX_KEY,
            MODULE_KEYS.BATCH_KEY,
            MODULE_KEYS.PROFILE_COEF_KEY,
        )
        return {key: inference_outputs[key] for key in keys}

    @auto_move_data
    def generative(
        self,
        memory: torch.Tensor,
        memory_pad: torch.Tensor,
        target_idx: torch.Tensor | None,
        batch_index: torch.Tensor,
        profile_coef: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Restore the targets from the whole memory, and again from ``[CLS]`` alone.

        The ``[CLS]``-only pass does not add the profile fit's reconstruction: given it,
        ``[CLS]`` would only have to carry what the low-rank fit misses, and the embedding
        lost cell-type structure (pbmc68k label transfer 0.781 vs 0.803; see :doc:`/design`).
        """
        if target_idx is None:
            return {}
        out = {
            MODULE_KEYS.PRED_KEY: self.restore(
                memory, memory_pad, target_idx, batch_index, profile_coef
            )
        }
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
