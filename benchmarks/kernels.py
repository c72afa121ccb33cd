"""Kernel timings behind the training-throughput levers, at the default model's shapes.

The default model (``d_model`` 128, 4 heads of 32, ``n_context`` 256: 257 tokens) trains on
minibatches of 64 samples. Timed here, each as the median of repeated calls:

1. **attention**: :func:`torch.nn.functional.scaled_dot_product_attention` (64 × 4 heads ×
   257 tokens × 32, a key-padding mask), forward and forward + backward, in fp32 and in bf16
   (the fused CPU kernel), and the dtype ``gexbert_sc.module._attention.attend`` gives it
   under bf16 autocast on this CPU;
2. **feed-forward**: ``h + FF(LN h)`` of an encoder block over 64 × 257 tokens, whole and in
   the package's row chunks (``FFN_CHUNK_ELEMENTS``), inference and forward + backward, fp32
   and bf16 autocast;
3. **optimiser**: one AdamW step over the parameters of a default model of 500, 4,000 and
   20,000 genes, the loop, ``foreach`` and ``fused`` implementations; and the gradient check
   before it, one ``isfinite`` per tensor against one multi-tensor norm.

Rerun: ``python benchmarks/kernels.py`` (about a minute; ``--threads``; ``--fast`` for a smoke
run). Writes ``benchmarks/results/kernels.csv``.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from _common import benchmark_parser, results_path

import gexbert_sc.module._attention as attention
from gexbert_sc.module._attention import EncoderBlock
from gexbert_sc.utils import cpu_has_amx

BATCH, HEADS, TOKENS, D_MODEL = 64, 4, 257, 128


def median_ms(call, seconds: float) -> float:
    """Median milliseconds of ``call()`` over repeated calls filling about ``seconds``."""
    call()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def _autocast(dtype: torch.dtype | None) -> torch.autocast:
    return torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None)


def attention_rows(seconds: float, batch: int) -> list[dict]:
    """The fused attention kernel in fp32 and bf16, forward and forward + backward."""
    torch.manual_seed(0)
    mask = (torch.rand(batch, 1, 1, TOKENS) > 0.2) | (torch.arange(TOKENS) == 0)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = (
            torch.randn(batch, HEADS, TOKENS, D_MODEL // HEADS, dtype=dtype, requires_grad=True)
            for _ in range(3)
        )
        grad = torch.randn_like(q)

        def forward(q=q, k=k, v=v):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

        def both(forward=forward, grad=grad):
            forward().backward(grad)

        with torch.no_grad():
            rows.append({"kernel": "attention", "dtype": str(dtype), "pass": "forward",
                         "ms": median_ms(forward, seconds)})  # fmt: skip
        rows.append({"kernel": "attention", "dtype": str(dtype), "pass": "forward+backward",
                     "ms": median_ms(both, seconds)})  # fmt: skip
    chosen = attention.attend(q, k, v, mask)  # bf16 inputs, as under autocast
    note = f"attend() on this CPU (AMX: {cpu_has_amx()}) runs the kernel in "
    rows.append({"kernel": "attention", "dtype": "bf16 autocast", "pass": "choice",
                 "note": note + ("fp32" if not cpu_has_amx() else str(chosen.dtype))})  # fmt: skip
    return rows


def feed_forward_rows(seconds: float, batch: int) -> list[dict]:
    """An encoder block's feed-forward sublayer, whole and in row chunks."""
    torch.manual_seed(0)
    block = EncoderBlock(D_MODEL, HEADS)
    h = torch.randn(batch, TOKENS, D_MODEL, requires_grad=True)
    grad = torch.randn_like(h)
    chunked = attention.FFN_CHUNK_ELEMENTS
    rows = []
    for label, elements in (("whole", 2**62), ("chunked", chunked)):
        attention.FFN_CHUNK_ELEMENTS = elements
        for dtype in (None, torch.bfloat16):

            def inference(dtype=dtype):
                with torch.no_grad(), _autocast(dtype):
                    block.feed_forward(h)

            def both(dtype=dtype):
                with _autocast(dtype):
                    out = block.feed_forward(h)
                out.backward(grad)

            for name, call in (("inference", inference), ("forward+backward", both)):
                rows.append({"kernel": "feed-forward", "dtype": str(dtype or torch.float32),
                             "pass": name, "variant": label,
                             "ms": median_ms(call, seconds)})  # fmt: skip
    attention.FFN_CHUNK_ELEMENTS = chunked
    return rows


def optimiser_rows(seconds: float, gene_counts: tuple[int, ...]) -> list[dict]:
    """AdamW implementations and the gradient check, over a default model's parameters."""
    rows = []
    for n_vars in gene_counts:
        # per-gene tables (gene, value, profile, output embeddings) and the blocks' weights
        shapes = [(n_vars, D_MODEL)] * 4 + [(4 * D_MODEL, D_MODEL)] * 6 + [(D_MODEL,)] * 30
        params = [torch.nn.Parameter(torch.randn(shape)) for shape in shapes]
        for param in params:
            param.grad = torch.randn_like(param)
        for variant in ("for-loop", "foreach", "fused"):
            kwargs = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}}
            optimizer = torch.optim.AdamW(params, lr=1e-4, **kwargs.get(variant, {"fused": True}))
            rows.append({"kernel": "AdamW step", "n_vars": n_vars, "variant": variant,
                         "ms": median_ms(optimizer.step, seconds)})  # fmt: skip
        grads = [param.grad for param in params]
        checks = {
            "isfinite per tensor": lambda g=grads: torch.stack(
                [torch.isfinite(x).all() for x in g]
            ).all(),
            "one multi-tensor norm": lambda g=grads: torch.isfinite(
                torch.nn.utils.get_total_norm(g)
            ),
        }
        for variant, call in checks.items():
            rows.append({"kernel": "gradient check", "n_vars": n_vars, "variant": variant,
                         "ms": median_ms(call, seconds)})  # fmt: skip
    return rows


def main() -> None:
    parser = benchmark_parser(__doc__.splitlines()[0], "tiny shapes, short timings")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seconds = 0.2 if args.fast else 3.0
    batch = 4 if args.fast else BATCH
    print(f"threads {torch.get_num_threads()}, CPU cores {os.cpu_count()}, AMX {cpu_has_amx()}")
    rows = attention_rows(seconds, batch) + feed_forward_rows(seconds, batch)
    rows += optimiser_rows(seconds, (500,) if args.fast else (500, 4000, 20000))
    table = pd.DataFrame(rows)
    table.to_csv(results_path("kernels.csv", args), index=False)
    pd.set_option("display.width", 200)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
