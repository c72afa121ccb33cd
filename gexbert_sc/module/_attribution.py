"""Per-sample gene attributions of a scalar read from the encoder: three ways to compute them.

Every function takes the module, one minibatch's inputs and a *score*: a function of the
encoder's outputs (and of per-sample tensors ``info``) that returns one number per sample,
e.g. a class probability. It returns a ``(B, G)`` attribution of that score to each gene
(0 for a gene the sample did not measure): how much the score owes to reading the gene.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from gexbert_sc._constants import MODULE_KEYS
from gexbert_sc.module._encoder import ExpressionEncoder
from gexbert_sc.module._presence import BLOCK_ATTENTION_KEY, encode_with_presence

#: ``score(outputs, *info) -> (B,)``: the scalar explained, from the encoder's outputs.
Score = Callable[..., torch.Tensor]


class Minibatch(NamedTuple):
    """One minibatch's inputs to the encoder, on the model's device."""

    #: ``(B, G)`` raw values, NaN where missing.
    x: torch.Tensor
    #: ``(B, G)`` missing mask (``>= 0.5`` where missing), or None.
    missing: torch.Tensor | None
    #: ``(B, 1)`` batch codes, or None.
    batch_index: torch.Tensor | None


def gradient_attention(
    module: ExpressionEncoder,
    batch: Minibatch,
    score: Score,
    info: tuple[torch.Tensor, ...],
) -> torch.Tensor:
    """Gradient-weighted attention relevance of each context gene (Chefer et al. 2021).

    Each block's attention ``A`` is weighed by the score's gradient with respect to it,
    ``Ā = mean_heads((∇A ⊙ A)⁺)``, and propagated through the blocks with the residual,
    ``R ← R + Ā R`` from ``R = I``; a gene's relevance is its column of the ``[CLS]`` row.
    Genes outside the context get 0 (they reach ``[CLS]`` only through the profile summary,
    which this method does not see). Cost: one forward and backward pass.

    Parameters
    ----------
    module
        The module, in eval mode.
    batch
        The minibatch's inputs.
    score, info
        The explained score and its per-sample tensors.

    Returns
    -------
    ``(B, G)`` relevances (``>= 0``).
    """
    x = batch.x
    presence = torch.ones_like(x, dtype=torch.float32).requires_grad_(True)
    with torch.enable_grad():
        out = encode_with_presence(module, x, batch.missing, presence, batch.batch_index)
        attention = out[BLOCK_ATTENTION_KEY]
        grads = torch.autograd.grad(score(out, *info).sum(), attention)
    relevance = torch.eye(attention[0].shape[-1], device=x.device).expand(len(x), -1, -1)
    for weights, grad in zip(attention, grads, strict=True):
        mixed = (grad * weights).clamp_min(0).mean(1)
        relevance = relevance + mixed @ relevance
    valid = out[MODULE_KEYS.CONTEXT_VALID_KEY]
    tokens = torch.where(valid, relevance[:, 0, 1:], 0.0)
    return _per_gene(tokens, out[MODULE_KEYS.CONTEXT_IDX_KEY], x.shape[1])


def integrated_gradients(
    module: ExpressionEncoder,
    batch: Minibatch,
    score: Score,
    info: tuple[torch.Tensor, ...],
    n_steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated gradients of the score along the genes' presence, from all missing to all read.

    Captum's :class:`~captum.attr.IntegratedGradients` integrates the gradient with respect
    to every gene's presence (:func:`~gexbert_sc.module._presence.encode_with_presence`)
    from 0 (every gene read as missing: the baseline stays a kind of input the model reads,
    not an expression value of zero) to 1 (the sample as measured), by ``n_steps``-point
    Gauss-Legendre quadrature; a context gene's attention share follows
    ``presence ** log2(1 + context length)`` (same endpoints, a path the quadrature
    resolves: ``key_exponent`` of ``encode_with_presence``). Attributions are complete: they
    sum to the score of the sample minus the score of nothing read, up to the quadrature
    error returned. Cost: ``n_steps`` forward and backward passes.

    Parameters
    ----------
    module, batch, score, info
        As in :func:`gradient_attention`.
    n_steps
        Quadrature points.

    Returns
    -------
    ``(attributions, delta)``: ``(B, G)`` attributions and, per sample, their sum minus the
    score difference (the quadrature error).
    """
    from captum.attr import IntegratedGradients

    def forward(presence, *inputs):
        x_, missing_, batch_, exponent, *info_ = inputs
        reading = encode_with_presence(module, x_, missing_, presence, batch_, exponent)
        return score(reading, *info_)

    x, missing, batch_index = batch
    _, observed, _ = module.prepare_values(x, missing)
    context = module.fixed_context_length(observed, observed & (x != 0), module.n_inference_context)
    exponent = torch.log2(1.0 + context.float()).clamp_min(1.0).unsqueeze(1)
    with torch.enable_grad():
        attributions, delta = IntegratedGradients(forward).attribute(
            observed.float(),
            baselines=torch.zeros_like(x, dtype=torch.float32),
            additional_forward_args=(x, missing, batch_index, exponent, *info),
            n_steps=n_steps,
            internal_batch_size=len(x),
            return_convergence_delta=True,
        )
    return attributions.detach(), delta.detach()


@torch.inference_mode()
def deletion(
    module: ExpressionEncoder,
    batch: Minibatch,
    score: Score,
    info: tuple[torch.Tensor, ...],
    chunk_size: int,
) -> torch.Tensor:
    """Attribute by the score's drop when each measured gene alone is read as missing.

    For every gene a sample measured, the sample is encoded again with that gene missing
    (NaN), exactly as a sample that never measured it, and the score's change is the gene's
    attribution: ``score(sample) - score(sample without the gene)``. Cost: one forward pass
    per measured gene and sample, ``chunk_size`` such variants at a time.

    Parameters
    ----------
    module, batch, score, info
        As in :func:`gradient_attention`.
    chunk_size
        Variants encoded per forward pass.

    Returns
    -------
    ``(B, G)`` score drops (0 for a gene the sample did not measure).
    """
    x, missing, batch_index = batch
    full = score(module.inference(x, missing, batch_index, encoding={}), *info)
    _, observed, _ = module.prepare_values(x, missing)
    samples, genes = observed.nonzero(as_tuple=True)
    attributions = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for start in range(0, len(samples), chunk_size):
        rows, columns = samples[start : start + chunk_size], genes[start : start + chunk_size]
        variant = x[rows].clone()
        variant[torch.arange(len(rows), device=x.device), columns] = torch.nan
        out = module.inference(
            variant,
            None if missing is None else missing[rows],
            None if batch_index is None else batch_index[rows],
            encoding={},
        )
        dropped = score(out, *(part[rows] for part in info))
        attributions[rows, columns] = (full[rows] - dropped).float()
    return attributions


def _per_gene(tokens: torch.Tensor, gene_idx: torch.Tensor, n_vars: int) -> torch.Tensor:
    """Scatter ``(B, L)`` per-token values onto ``(B, G)`` genes (0 where not in context)."""
    out = torch.zeros(len(tokens), n_vars, dtype=torch.float32, device=tokens.device)
    return out.scatter_add_(1, gene_idx, tokens.float())
