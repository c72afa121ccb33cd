"""Pre-LN transformer blocks built on :func:`torch.nn.functional.scaled_dot_product_attention`."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from gexbert_sc.utils import cpu_has_amx

#: Which attention weights an encoder block returns: the ``[CLS]`` row, or every row.
AttentionRows = Literal["cls", "all"]

#: Width of the feed-forward layer in units of ``d_model``.
FFN_FACTOR = 4
#: Hidden feed-forward values computed at once on a CPU (rows × ``FFN_FACTOR·d_model``): a
#: chunk of 4 MB (fp32) stays in the cache between the two products and the GELU, where the
#: whole minibatch's hidden layer (tens of MB) would go through memory three times.
FFN_CHUNK_ELEMENTS = 2**20


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """:func:`~torch.nn.functional.scaled_dot_product_attention`, in fp32 on CPUs without AMX.

    Under bf16 autocast on a CPU without AMX tiles (e.g. AVX512-BF16 or AVX2 only), torch's
    fused CPU attention kernel is slower in bf16 than in fp32 (``benchmarks/kernels.py``,
    :doc:`/performance`), so ``q``, ``k`` and ``v`` are read in fp32 and the output is
    returned in their dtype. Elsewhere (fp32, a GPU, a CPU with AMX) the kernel
    runs in the dtype it is given.

    Parameters
    ----------
    q, k, v
        ``(B, H, Lq, d_head)``, ``(B, H, Lk, d_head)``, ``(B, H, Lk, d_head)``.
    attn_mask
        Boolean mask broadcastable to ``(B, H, Lq, Lk)``, ``True`` where a key is read.
    dropout_p
        Dropout on the attention weights.

    Returns
    -------
    ``(B, H, Lq, d_head)`` in the dtype of ``q``.
    """
    if q.device.type == "cpu" and q.dtype != torch.float32 and not cpu_has_amx():
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), attn_mask=attn_mask, dropout_p=dropout_p
            )
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)


def _key_padding_to_attn_mask(key_padding: torch.Tensor | None) -> torch.Tensor | None:
    """Turn a ``(B, L)`` bool mask (``True`` = padding) into an SDPA mask ``(B, 1, 1, L)``."""
    if key_padding is None:
        return None
    return (~key_padding)[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Multi-head attention whose queries and keys may come from different sequences.

    Parameters
    ----------
    d_model
        Token width.
    n_heads
        Number of attention heads; must divide ``d_model``.
    dropout
        Dropout on the attention weights (training only).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            msg = f"`d_model` ({d_model}) must be divisible by `n_heads` ({n_heads})."
            raise ValueError(msg)
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, length, d = t.shape
        return t.view(b, length, self.n_heads, d // self.n_heads).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        memory: torch.Tensor,
        key_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from ``query`` ``(B, Lq, d)`` to ``memory`` ``(B, Lk, d)``.

        A memory of one token without padding (the decoder's ``[CLS]``-only pass) gives that
        token's weight 1 to every query, so the output is its projected value for every query:
        it is computed once per sample, without the query projection (exact; with attention
        dropout in training the general path runs, as dropout may drop the one weight).
        """
        dropout_p = self.dropout if self.training else 0.0
        if memory.shape[1] == 1 and key_padding is None and dropout_p == 0:
            value = self.kv_proj(memory).chunk(2, dim=-1)[1]
            return self.out_proj(value).expand(-1, query.shape[1], -1)
        q = self._split_heads(self.q_proj(query))
        k, v = (self._split_heads(t) for t in self.kv_proj(memory).chunk(2, dim=-1))
        out = attend(q, k, v, _key_padding_to_attn_mask(key_padding), dropout_p)
        b, _, lq, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, -1))

    def weights(
        self,
        query: torch.Tensor,
        memory: torch.Tensor,
        key_padding: torch.Tensor | None = None,
        key_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention weights ``(B, n_heads, Lq, Lk)`` of ``query`` over ``memory``, in fp32.

        The unfused softmax of the same scores that :meth:`forward` gives to the fused kernel:
        only called when weights are asked for, so training keeps the fused kernel.
        ``key_bias`` ``(B, Lk)`` is added to every query's score of each key (``log w``
        weighs a key's share by ``w``; ``-inf`` removes it, as padding does).
        """
        q = self._split_heads(self.q_proj(query))
        k = self._split_heads(self.kv_proj(memory).chunk(2, dim=-1)[0])
        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        if key_padding is not None:
            scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
        if key_bias is not None:
            scores = scores.float() + key_bias[:, None, None, :]
        return scores.float().softmax(dim=-1)

    def read(self, weights: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Output ``(B, Lq, d)`` of attention with the given ``(B, n_heads, Lq, Lk)`` weights.

        With the weights of :meth:`weights`, the output of :meth:`forward` (without dropout),
        computed from weights that autograd can differentiate.
        """
        v = self._split_heads(self.kv_proj(memory).chunk(2, dim=-1)[1])
        out = weights.to(v.dtype) @ v
        b, _, lq, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, -1))


class FeedForward(nn.Sequential):
    """Position-wise MLP ``d → FFN_FACTOR·d → d`` with GELU."""

    def __init__(self, d_model: int, dropout: float = 0.0):
        super().__init__(
            nn.Linear(d_model, FFN_FACTOR * d_model),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(FFN_FACTOR * d_model, d_model),
        )


class _PreLNBlock(nn.Module):
    """Layers shared by the encoder and decoder blocks: LN → attention, LN → feed-forward."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.norm_attn = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, dropout)

    def feed_forward(self, h: torch.Tensor) -> torch.Tensor:
        """Apply the feed-forward sublayer with its residual, ``h + FF(LN h)``, to ``(..., d)``.

        On a CPU the tokens go through in chunks of rows whose hidden layer holds
        :data:`FFN_CHUNK_ELEMENTS` values (each row is independent: the same result, faster
        where memory bandwidth is the limit; ``benchmarks/kernels.py``, :doc:`/performance`).
        On a GPU all rows go at once.
        """
        rows_per_chunk = max(1, FFN_CHUNK_ELEMENTS // (FFN_FACTOR * h.shape[-1]))
        if h.device.type != "cpu" or h[..., 0].numel() <= rows_per_chunk:
            return h + self.ff(self.norm_ff(h))
        rows = h.reshape(-1, h.shape[-1]).split(rows_per_chunk)
        if torch.is_grad_enabled():
            return torch.cat([part + self.ff(self.norm_ff(part)) for part in rows]).view(h.shape)
        # at inference, written chunk by chunk into one tensor: no concatenation pass
        out = h.new_empty(h.shape)
        dests = out.view(-1, h.shape[-1]).split(rows_per_chunk)
        for part, dest in zip(rows, dests, strict=True):
            torch.add(part, self.ff(self.norm_ff(part)), out=dest)
        return out


class EncoderBlock(_PreLNBlock):
    """Pre-LN self-attention block: ``h + Attn(LN h)``, then ``h + FF(LN h)``."""

    def forward(
        self,
        h: torch.Tensor,
        key_padding: torch.Tensor | None = None,
        attention: AttentionRows | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Update tokens ``h`` ``(B, L, d)``; ``key_padding`` ``(B, L)`` marks padding.

        With ``attention``, also return the attention weights of the block
        (:meth:`MultiHeadAttention.weights`): ``"cls"``, the first token's ``(B, n_heads, L)``
        (``O(L)`` per head); ``"all"``, every token's ``(B, n_heads, L, L)``.
        """
        x = self.norm_attn(h)
        out = self.feed_forward(h + self.attn(x, x, key_padding))
        if attention is None:
            return out
        if attention == "cls":
            return out, self.attn.weights(x[:, :1], x, key_padding).squeeze(-2)
        return out, self.attn.weights(x, x, key_padding)

    def forward_weighted(
        self, h: torch.Tensor, key_bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update tokens with explicit attention weights biased by ``key_bias`` ``(B, L)``.

        The differentiable twin of :meth:`forward` that gene attributions read: the weights
        ``(B, n_heads, L, L)`` are returned inside the autograd graph, and ``key_bias``
        (``log`` of each token's presence, ``-inf`` on padding) weighs each key's share.
        With a bias of 0 on real tokens it gives :meth:`forward`'s output.
        """
        x = self.norm_attn(h)
        weights = self.attn.weights(x, x, key_bias=key_bias)
        return self.feed_forward(h + self.attn.read(weights, x)), weights


class DecoderBlock(_PreLNBlock):
    """Pre-LN cross-attention block: queries read the memory and never each other.

    Because there is no query-to-query attention, the output for one query does not depend on
    which other queries are in the same call.
    """

    def forward(
        self,
        query: torch.Tensor,
        memory: torch.Tensor,
        key_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Update queries ``(B, Lq, d)`` from the normalised ``memory`` ``(B, Lk, d)``."""
        return self.feed_forward(query + self.attn(self.norm_attn(query), memory, key_padding))
