"""Forward FLOPs of the encoder and decoder, derived from the blocks' own widths.

A block is a pre-LN attention layer (``q``/``k``/``v``/output projections, ``4 d^2`` weights
for self-attention) and a feed-forward layer ``d → FFN_FACTOR·d → d``; a multiply-add counts
as 2 FLOPs. :doc:`/performance` derives the formulas and checks them against torch's counter.
"""

from __future__ import annotations

from gexbert_sc.module._attention import FFN_FACTOR


def encoder_flops(tokens: int, d_model: int, n_layers: int) -> float:
    """Forward FLOPs of the encoder for one sample.

    Parameters
    ----------
    tokens
        Encoder tokens (``[CLS]`` + context genes).
    d_model
        Token width.
    n_layers
        Encoder blocks.

    Returns
    -------
    Projections and feed-forward ``(8 + 4·FFN_FACTOR) d^2`` per token, plus the attention
    scores and weighted sums ``4 T d`` per token, summed over tokens and blocks.
    """
    per_token = (8 + 4 * FFN_FACTOR) * d_model * d_model + 4 * tokens * d_model
    return float(n_layers * tokens * per_token)


def decoder_flops(
    n_query: int, n_memory: int, d_model: int, n_layers: int, n_calls: int = 1
) -> float:
    """Forward FLOPs of the cross-attention decoder for one sample.

    Parameters
    ----------
    n_query
        Queries (genes restored).
    n_memory
        Encoder tokens each query reads.
    d_model
        Token width.
    n_layers
        Decoder blocks.
    n_calls
        Decoder calls the queries are split into; each projects the memory to keys and
        values once.

    Returns
    -------
    Query and output projections and feed-forward ``(4 + 4·FFN_FACTOR) d^2`` plus attention
    ``4 M d`` per query, and the key/value projection ``4 d^2 M`` per call, over the blocks.
    """
    per_query = (4 + 4 * FFN_FACTOR) * d_model * d_model + 4 * n_memory * d_model
    per_call = 4 * d_model * d_model * n_memory
    return float(n_layers * (n_query * per_query + n_calls * per_call))


def bottleneck_flops(n_query: int, d_model: int, n_layers: int) -> float:
    """Forward FLOPs of the decoder's ``[CLS]``-only pass for one sample.

    With one memory token every query gets the same attention output (the token's projected
    value, computed once per sample), so a query costs its feed-forward layer alone.

    Parameters
    ----------
    n_query
        Queries (genes restored).
    d_model
        Token width.
    n_layers
        Decoder blocks.

    Returns
    -------
    Feed-forward ``4·FFN_FACTOR d^2`` per query, plus the key/value and output projections
    of the one token ``6 d^2``, over the blocks.
    """
    per_query = 4 * FFN_FACTOR * d_model * d_model
    return float(n_layers * (n_query * per_query + 6 * d_model * d_model))
