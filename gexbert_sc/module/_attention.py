"""Pre-LN transformer blocks built on :func:`torch.nn.functional.scaled_dot_product_attention`."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

#: Which attention weights an encoder block returns: the ``[CLS]`` row, or every row.
AttentionRows = Literal["cls", "all"]

#: Width of the feed-forward layer in units of ``d_model``.
FFN_FACTOR = 4


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
        """Attend from ``query`` ``(B, Lq, d)`` to ``memory`` ``(B, Lk, d)``."""
        q = self._split_heads(self.q_proj(query))
        k, v = (self._split_heads(t) for t in self.kv_proj(memory).chunk(2, dim=-1))
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=_key_padding_to_attn_mask(key_padding),
            dropout_p=self.dropout if self.training else 0.0,
        )
        b, _, lq, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, -1))

    def weights(
        self, query: torch.Tensor, memory: torch.Tensor, key_padding: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attention weights ``(B, n_heads, Lq, Lk)`` of ``query`` over ``memory``, in fp32.

        The unfused softmax of the same scores that :meth:`forward` gives to the fused kernel:
        only called when weights are asked for, so training keeps the fused kernel.
        """
        q = self._split_heads(self.q_proj(query))
        k = self._split_heads(self.kv_proj(memory).chunk(2, dim=-1)[0])
        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        if key_padding is not None:
            scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
        return scores.float().softmax(dim=-1)


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
        out = h + self.attn(x, x, key_padding)
        out = out + self.ff(self.norm_ff(out))
        if attention is None:
            return out
        if attention == "cls":
            return out, self.attn.weights(x[:, :1], x, key_padding).squeeze(-2)
        return out, self.attn.weights(x, x, key_padding)


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
        query = query + self.attn(self.norm_attn(query), memory, key_padding)
        return query + self.ff(self.norm_ff(query))
