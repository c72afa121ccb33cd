"""A differentiable reading of samples in which each gene's presence is a weight in ``[0, 1]``."""

from __future__ import annotations

import torch

from gexbert_sc._constants import MODULE_KEYS
from gexbert_sc.module._encoder import ExpressionEncoder

#: Key of the encoder blocks' attention weights (a list, one ``(B, H, 1 + L, 1 + L)`` per block).
BLOCK_ATTENTION_KEY = "block_attention"
#: Key of the samples' log-scale values.
VALUES_KEY = "values"
#: Smallest presence a key's attention bias reads (``log`` of it, about -69, is no share).
MIN_PRESENCE = 1e-30


def encode_with_presence(
    encoder: ExpressionEncoder,
    x: torch.Tensor,
    missing: torch.Tensor | None,
    presence: torch.Tensor,
    batch_index: torch.Tensor | None = None,
    key_exponent: torch.Tensor | float = 1.0,
) -> dict[str, torch.Tensor | list[torch.Tensor] | None]:
    """Encode samples on their fixed inference context, each gene weighed by its presence.

    A presence of 1 reads a gene as :meth:`~gexbert_sc.module.ExpressionEncoder.encode_samples`
    does; 0 reads it as missing; values between scale its part in the profile summary
    (:meth:`~gexbert_sc.module.ExpressionEncoder.profile_summary` with ``weight``) and, for
    a context gene, its share of every query's attention (a key bias of ``log presence``).
    The context is the one the unweighted sample has, so the reading is a smooth function of
    the presences that gradients (and integrated gradients from all-missing) run through.
    Attention weights are computed explicitly, not by the fused kernel, and kept in the
    graph.

    Parameters
    ----------
    encoder
        The module (in eval mode).
    x, missing
        ``(B, G)`` raw input values (NaN where missing) and the optional missing mask.
    presence
        ``(B, G)`` weights in ``[0, 1]`` (a gene the sample did not measure stays missing).
    batch_index
        ``(B, 1)`` batch codes, passed through for the decoder.
    key_exponent
        ``k`` (a number or ``(B, 1)``): a context gene's attention share is weighed by
        ``presence ** k`` (a key bias of ``k log presence``). Any ``k > 0`` gives the same
        reading at presences 0 and 1; integrated gradients take ``k`` of order
        ``log2(context length)``, so that a gene's share of attention (which saturates at a
        presence of about ``1 / context length`` when ``k = 1``) changes along the whole path
        and the quadrature resolves it.

    Returns
    -------
    The keys of :meth:`~gexbert_sc.module.ExpressionEncoder.encode_samples` (embedding,
    memory and its padding, context genes and validity, observed mask, size factors,
    profile coefficients), the samples' log-scale values under :data:`VALUES_KEY`, and
    :data:`BLOCK_ATTENTION_KEY`.
    """
    y, observed, factors = encoder.prepare_values(x, missing)
    nonzero = observed & (y != 0)
    gene_idx, valid = encoder.select_context(
        observed, nonzero, encoder.n_inference_context, random=False
    )
    weight = torch.where(observed, presence, 0.0)
    summary, coef = encoder.profile_summary(y, observed, weight)
    h = encoder.input_tokens(gene_idx, y.gather(1, gene_idx), summary)
    token_bias = weight.gather(1, gene_idx).clamp_min(MIN_PRESENCE).log() * key_exponent
    token_bias = torch.where(valid, token_bias, -torch.inf)
    key_bias = torch.cat([token_bias.new_zeros(len(token_bias), 1), token_bias], dim=1)
    attention = []
    for block in encoder.encoder:
        h, weights = block.forward_weighted(h, key_bias)
        attention.append(weights)
    memory = encoder.encoder_norm(h)
    return {
        VALUES_KEY: y,
        MODULE_KEYS.BATCH_KEY: batch_index,
        MODULE_KEYS.OBSERVED_KEY: observed,
        MODULE_KEYS.SIZE_FACTOR_KEY: factors,
        MODULE_KEYS.CONTEXT_IDX_KEY: gene_idx,
        MODULE_KEYS.CONTEXT_VALID_KEY: valid,
        MODULE_KEYS.PROFILE_COEF_KEY: coef,
        MODULE_KEYS.MEMORY_KEY: memory,
        MODULE_KEYS.MEMORY_PAD_KEY: torch.cat([valid.new_zeros(len(valid), 1), ~valid], dim=1),
        MODULE_KEYS.Z_KEY: memory[:, 0],
        BLOCK_ATTENTION_KEY: attention,
    }
