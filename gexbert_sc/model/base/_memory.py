r"""Inference batch size from a memory budget.

The getters read a minibatch of samples densified from the stored matrix, encode ``[CLS]``
plus up to ``n_inference_context`` genes per sample and (for restoration) decode queries a
chunk of genes at a time. Their activation memory per sample is estimated, in values of 4 bytes
(float32; bf16 autocast only lowers it), as

.. math::

    m = 12 G + (6 + 2f)\, T d + 2 h T^2
        + \mathbb{1}[Q > 0] \left( q\,((4 + 2f)\, d + 2 h T) + 2 T d + 10 Q \right),

with :math:`G` genes in the vocabulary (the dense input row and its temporaries: about 10 values
per gene measured), :math:`T = 1 + \min(L, G)` encoder tokens for an inference context
:math:`L`, width :math:`d`, :math:`h` heads, :math:`Q` genes to restore and :math:`q=\min(Q,c)`
queries decoded at once for a query chunk size :math:`c`, and the feed-forward factor
:math:`f` (``FFN_FACTOR`` = 4, so ``14 T d`` and ``12 d``). ``(6 + 2f) T d`` covers the live
tensors of one encoder block (residual, normalised input, query/key/value, attention output,
two ``f d`` feed-forward tensors); ``2 h T^2`` the attention scores and weights of the unfused
(math) attention path, so the estimate is an upper bound whichever attention kernel runs; the query
terms are the same for the decoder's chunk, plus the keys/values of the memory and the restored
values (with the running sums of :func:`gexbert_sc.tl.impute`'s ``n_samples`` spread). The batch
size is the largest whose ``batch_size × m × 4`` bytes fit the budget.

The budget bounds the activations of one minibatch only: the model's parameters, the AnnData
and the returned array come on top.
"""

from __future__ import annotations

import math
import re

from gexbert_sc._constants import QUERY_CHUNK_SIZE
from gexbert_sc.module import FFN_FACTOR

BYTES_PER_VALUE = 4

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_BUDGET = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_memory_budget(memory_budget: int | float | str) -> int:
    """Return a memory budget in bytes.

    Parameters
    ----------
    memory_budget
        Bytes as a number, or a string with a unit: ``"500MB"``, ``"2GB"`` (powers of 1000)
        or ``"1.5GiB"`` (powers of 1024); case does not matter.

    Returns
    -------
    The budget in bytes (a positive integer).

    Raises
    ------
    ValueError
        If the budget is not positive or the string cannot be read.
    """
    if isinstance(memory_budget, str):
        match = _BUDGET.match(memory_budget)
        unit = match.group(2).lower() if match else None
        if unit not in _UNITS:
            msg = (
                f"`memory_budget={memory_budget!r}` is not a size; give bytes or a string like "
                f"'500MB', '2GB' or '1.5GiB' (units: {', '.join(u for u in _UNITS if u)})."
            )
            raise ValueError(msg)
        value = float(match.group(1)) * _UNITS[unit]
    elif isinstance(memory_budget, int | float) and not isinstance(memory_budget, bool):
        value = float(memory_budget)
    else:
        msg = f"`memory_budget` must be a number of bytes or a string, got {memory_budget!r}."
        raise TypeError(msg)
    if not math.isfinite(value) or value < 1:
        msg = f"`memory_budget` must be at least 1 byte, got {memory_budget!r}."
        raise ValueError(msg)
    return int(value)


def activation_bytes_per_sample(
    *,
    n_vars: int,
    d_model: int,
    n_heads: int,
    n_context: int,
    n_query: int = 0,
    query_chunk_size: int = QUERY_CHUNK_SIZE,
) -> int:
    """Estimated inference activation memory of one sample, in bytes (module docstring).

    Parameters
    ----------
    n_vars
        Genes of the vocabulary (width of the dense input row).
    d_model, n_heads
        Token width and attention heads.
    n_context
        Inference context size (genes read per sample).
    n_query
        Genes restored per sample (0 for the embedding only).
    query_chunk_size
        Genes decoded at once.
    """
    tokens = 1 + min(n_context, n_vars)
    # live tensors of one block: 6 of width d (residual, normalised input, q, k, v, attention
    # output) for the encoder, 4 for a decoder query, plus the two feed-forward tensors
    encoder_widths = 6 + 2 * FFN_FACTOR
    decoder_widths = 4 + 2 * FFN_FACTOR
    values = 12 * n_vars + encoder_widths * tokens * d_model + 2 * n_heads * tokens**2
    if n_query > 0:
        chunk = min(query_chunk_size, n_query)
        values += chunk * (decoder_widths * d_model + 2 * n_heads * tokens)
        values += 2 * tokens * d_model + 10 * n_query
    return BYTES_PER_VALUE * values


def batch_size_for_budget(memory_budget: int | float | str, **estimate: int) -> int:
    """Largest batch size whose estimated activation memory fits ``memory_budget``.

    Parameters
    ----------
    memory_budget
        See :func:`parse_memory_budget`.
    **estimate
        Arguments of :func:`activation_bytes_per_sample`.

    Returns
    -------
    The batch size (at least 1).

    Raises
    ------
    ValueError
        If not even one sample fits the budget.
    """
    budget = parse_memory_budget(memory_budget)
    per_sample = activation_bytes_per_sample(**estimate)
    if budget < per_sample:
        msg = (
            f"`memory_budget` ({budget:,} bytes) is below the estimated memory of one sample "
            f"({per_sample:,} bytes); raise it, or lower `query_chunk_size` or the model's "
            "`n_inference_context`."
        )
        raise ValueError(msg)
    return budget // per_sample
