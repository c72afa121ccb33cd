"""Every throughput path (chunked, fp32 kernel, shortcut) gives what the plain path gives.

Each path's outputs and gradients, in fp32 and under bf16 autocast, are checked against the
plain computation in fp32 on tiny blocks: to float rounding in fp32, and in bf16 within the
tolerance the plain bf16 path itself meets. The tests force each path on, so that they give
the same verdict on every CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import gexbert_sc.module._attention as attention
from gexbert_sc.module import GexBERTModule, bottleneck_flops
from gexbert_sc.module._attention import DecoderBlock, EncoderBlock, attend

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
#: Tolerance against fp32, relative to the largest reference value (floored at 1, so that a
#: gradient that is zero in exact arithmetic may be a rounding error on one path): outputs and
#: gradients of bf16 paths keep 8 bits of mantissa, and their sums are rounded each time.
TOLERANCE = {"fp32": 1e-5, "bf16": 5e-2}


def _autocast(precision: str) -> torch.autocast:
    dtype = PRECISIONS[precision]
    return torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None)


def _close(actual: torch.Tensor, desired: torch.Tensor, precision: str) -> None:
    scale = max(desired.abs().max().item(), 1.0)
    torch.testing.assert_close(
        actual.float(), desired.float(), rtol=0, atol=TOLERANCE[precision] * scale
    )


class _Calling(torch.nn.Module):
    """A block called through ``call(block, *inputs)``: its parameters keep their names."""

    def __init__(self, block: torch.nn.Module, call):
        super().__init__()
        self.block, self.call = block, call

    def forward(self, *inputs):
        return self.call(self.block, *inputs)


def _forward_backward(block, inputs, precision: str):
    """Output and the gradients of the block's weights and of the inputs for a fixed loss."""
    block.zero_grad(set_to_none=True)
    inputs = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    with _autocast(precision):
        out = block(*inputs)
    weights = torch.linspace(-1, 1, out.numel()).view(out.shape)
    (out.float() * weights).sum().backward()
    grads = {
        name.removeprefix("block."): p.grad.clone()
        for name, p in block.named_parameters()
        if p.grad is not None
    }
    grads["input"] = inputs[0].grad.clone()
    return out.detach(), grads


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("grad", [True, False], ids=["training", "inference"])
def test_chunked_feed_forward_matches_the_whole_minibatch(monkeypatch, precision, grad):
    torch.manual_seed(0)
    block = EncoderBlock(16, 2)
    h = torch.randn(5, 7, 16)  # 35 tokens: chunks of 4 rows leave a partial last chunk
    with torch.no_grad(), _autocast(precision):
        whole = block.feed_forward(h)
    monkeypatch.setattr(attention, "FFN_CHUNK_ELEMENTS", 4 * 4 * 16)  # 4 rows per chunk
    if grad:
        feed_forward = _Calling(block, EncoderBlock.feed_forward)
        chunked, chunked_grads = _forward_backward(feed_forward, [h], precision)
        monkeypatch.setattr(attention, "FFN_CHUNK_ELEMENTS", 2**62)
        plain, plain_grads = _forward_backward(feed_forward, [h], precision)
        reference, reference_grads = _forward_backward(feed_forward, [h], "fp32")
        for path, path_grads in ((chunked, chunked_grads), (plain, plain_grads)):
            _close(path, reference, precision)
            for name, g in reference_grads.items():
                _close(path_grads[name], g, precision)
    else:
        with torch.no_grad(), _autocast(precision):
            chunked = block.feed_forward(h)
        assert chunked.dtype == whole.dtype
        _close(chunked, whole, precision)


@pytest.mark.parametrize("has_amx", [False, True], ids=["fp32-kernel", "autocast-kernel"])
def test_attention_kernel_precision_paths_agree(monkeypatch, has_amx):
    """Under bf16 autocast the fp32 kernel (CPUs without AMX) and the bf16 one agree."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 6, 8) for _ in range(3))
    mask = torch.ones(3, 1, 1, 6, dtype=torch.bool)
    mask[0, ..., 4:] = False
    reference = attend(q, k, v, mask)
    monkeypatch.setattr(attention, "cpu_has_amx", lambda: has_amx)
    out = attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert out.dtype == torch.bfloat16
    _close(out, reference, "bf16")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_one_token_memory_shortcut_matches_attention(precision):
    """The [CLS]-only decoder pass: the shortcut equals attention over an all-valid mask."""
    torch.manual_seed(0)
    block = DecoderBlock(16, 2)
    query, memory = torch.randn(4, 9, 16), torch.randn(4, 1, 16)
    all_valid = torch.zeros(4, 1, dtype=torch.bool)  # a mask: the general path
    short, short_grads = _forward_backward(block, [query, memory], precision)
    masked = _Calling(block, lambda b, q, m: b(q, m, all_valid))
    general, general_grads = _forward_backward(masked, [query, memory], precision)
    reference, reference_grads = _forward_backward(masked, [query, memory], "fp32")
    for path, path_grads in ((short, short_grads), (general, general_grads)):
        _close(path, reference, precision)
        for name, g in reference_grads.items():  # the query projection gets no gradient
            _close(path_grads.get(name, torch.zeros_like(g)), g, precision)


def test_one_token_shortcut_keeps_attention_dropout_in_training():
    """With attention dropout in training the one weight may be dropped: no shortcut."""
    torch.manual_seed(0)
    block = DecoderBlock(16, 2, dropout=0.5).train()
    query, memory = torch.randn(64, 9, 16), torch.randn(64, 1, 16)
    attended = block.attn(query, memory)
    # dropped weights give exactly zero attention for some queries, the shortcut never
    assert (attended - block.attn.out_proj.bias).abs().amax(-1).eq(0).any()


def test_bottleneck_flops_count_what_the_one_token_pass_computes():
    module = GexBERTModule(50, d_model=16, n_layers=1, n_heads=2, n_context=12)
    memory = torch.randn(3, 13, 16)
    genes = torch.arange(12).expand(3, -1)
    with FlopCounterMode(display=False) as counter:
        module.restore(memory[:, :1], None, genes, torch.zeros(3, 1))
    expected = 3 * bottleneck_flops(12, 16, len(module.decoder))
    assert counter.get_total_flops() == pytest.approx(expected, rel=0.02)
