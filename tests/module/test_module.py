import pytest
import torch

from gexbert_sc._constants import MODULE_KEYS
from gexbert_sc.module import GexBERTModule
from gexbert_sc.module._attention import MultiHeadAttention
from gexbert_sc.module._masking import draw_targets, hide_tokens, withhold_genes


def _module(**kwargs) -> GexBERTModule:
    torch.manual_seed(0)
    edges = torch.linspace(0.5, 3.0, 6).expand(30, 6).clone()
    defaults = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_levels": 8, "n_context": 12}
    return GexBERTModule(30, bin_edges=edges, **{**defaults, **kwargs})


def test_levels_reserve_zero_and_missing():
    module = _module()
    values = torch.tensor([[0.0, 0.4, 0.6, 5.0]])
    levels = module.expression_levels(values, torch.tensor([[0, 1, 2, 3]]))
    assert levels.tolist() == [[0, 1, 2, 7]]
    assert module.level_emb.num_embeddings == 9  # 8 levels + the missing embedding


def _training_step(module: GexBERTModule, n_samples: int):
    """A training-mode encoding of samples whose first 10 of 30 genes are missing."""
    x = torch.rand(n_samples, 30) * 3
    x[:, :10] = float("nan")
    module.train()
    out = module.inference(x, None, torch.zeros(n_samples, 1))
    targets, valid = out[MODULE_KEYS.TARGET_IDX_KEY], out[MODULE_KEYS.TARGET_VALID_KEY]
    assert (targets[valid] >= 10).all()
    torch.testing.assert_close(out[MODULE_KEYS.TARGET_KEY][valid], x.gather(1, targets)[valid])
    return out, targets, valid


def test_training_targets_are_withheld_observed_genes():
    out, targets, valid = _training_step(_module(), 64)
    context = out[MODULE_KEYS.CONTEXT_IDX_KEY]
    context_valid = out[MODULE_KEYS.CONTEXT_VALID_KEY]
    for row in range(64):
        seen = set(context[row][context_valid[row]].tolist())
        assert not seen & set(targets[row][valid[row]].tolist())
    # 20 observed genes; the share withheld per sample is drawn in (0.1, 0.9)
    n_targets = valid.sum(1).float()
    assert n_targets.min() >= 1 and n_targets.max() <= 12 and n_targets.std() > 1
    assert out[MODULE_KEYS.PROFILE_COEF_KEY].shape == (64, 16)


def test_legacy_training_targets_are_observed_genes_the_encoder_did_not_see():
    module = _module(mask_ratio=0.25, withhold_range=None, profile_fit=False)
    out, targets, valid = _training_step(module, 4)
    assert targets.shape == (4, 12)  # n_context targets per sample
    # 20 observed genes, 12 in context of which 3 hidden: 11 genes left unseen to restore
    assert valid.sum(1).tolist() == [11, 11, 11, 11]
    assert out[MODULE_KEYS.PROFILE_COEF_KEY] is None


def test_hidden_tokens_and_targets():
    valid = torch.ones(2, 12, dtype=torch.bool)
    valid[1, 6:] = False
    hidden = hide_tokens(valid, 0.25)
    assert hidden[0].sum() == 3 and not hidden[1, 6:].any()
    y = torch.rand(2, 30)
    observed = torch.ones(2, 30, dtype=torch.bool)
    gene_idx = torch.arange(12).expand(2, 12)
    targets = draw_targets(y, observed, gene_idx, valid, hidden)
    idx = targets[MODULE_KEYS.TARGET_IDX_KEY]
    for row in range(2):
        visible = set(gene_idx[row][valid[row] & ~hidden[row]].tolist())
        assert not visible & set(idx[row].tolist())
        assert set(gene_idx[row][hidden[row]].tolist()) <= set(idx[row].tolist())


def test_withheld_genes_are_observed_and_their_share_follows_the_range():
    observed = torch.ones(400, 200, dtype=torch.bool)
    observed[:, :50] = False
    generator = torch.Generator().manual_seed(0)
    withheld = withhold_genes(observed, (0.2, 0.6), generator)
    assert not withheld[:, :50].any()
    share = withheld.sum(1).float() / observed.sum(1)
    assert 0.15 < share.min() and share.max() < 0.65
    assert abs(share.mean().item() - 0.4) < 0.02
    # the genes are drawn irrespective of their values: each gene equally often
    per_gene = withheld[:, 50:].float().mean(0)
    assert per_gene.std() < 0.05
    again = withhold_genes(observed, (0.2, 0.6), torch.Generator().manual_seed(0))
    assert torch.equal(withheld, again)


def test_targets_are_the_withheld_genes_when_genes_are_withheld():
    y = torch.rand(3, 30)
    observed = torch.ones(3, 30, dtype=torch.bool)
    withheld = torch.zeros(3, 30, dtype=torch.bool)
    withheld[:, 20:25] = True
    gene_idx = torch.arange(12).expand(3, 12)
    valid = torch.ones(3, 12, dtype=torch.bool)
    hidden = torch.zeros(3, 12, dtype=torch.bool)
    targets = draw_targets(y, observed, gene_idx, valid, hidden, withheld=withheld)
    idx, ok = targets[MODULE_KEYS.TARGET_IDX_KEY], targets[MODULE_KEYS.TARGET_VALID_KEY]
    assert ok.sum(1).tolist() == [5, 5, 5]
    for row in range(3):
        assert set(idx[row][ok[row]].tolist()) == set(range(20, 25))


def test_context_takes_nonzero_genes_first():
    module = _module()
    observed = torch.ones(2, 30, dtype=torch.bool)
    nonzero = torch.zeros(2, 30, dtype=torch.bool)
    nonzero[:, 20:25] = True
    for random in (True, False):
        idx, valid = module.select_context(observed, nonzero, 8, random)
        assert set(idx[:, :5].flatten().tolist()) == set(range(20, 25)) and valid.all()


def test_missing_mask_layer_hides_values():
    module = _module()
    x = torch.rand(2, 30)
    missing = torch.zeros(2, 30)
    missing[:, 5:] = 1.0
    _, observed, _ = module.prepare_values(x, missing)
    assert observed[:, :5].all() and not observed[:, 5:].any()


def test_inference_context_is_fixed_and_trimmed():
    module = _module(n_inference_context=8)
    observed = torch.zeros(3, 30, dtype=torch.bool)
    observed[0, :20] = True
    observed[1, :4] = True
    nonzero = torch.zeros_like(observed)
    idx_a, valid_a = module.select_context(observed, nonzero, 8, random=False)
    idx_b, valid_b = module.select_context(observed[[1, 0, 2]], nonzero, 8, random=False)
    assert idx_a.shape == (3, 8)
    assert valid_a.sum(1).tolist() == [8, 4, 0]
    assert torch.equal(idx_a[[1, 0, 2]], idx_b) and torch.equal(valid_a[[1, 0, 2]], valid_b)


def test_decoder_output_does_not_depend_on_other_queries():
    module = _module().eval()
    x = torch.rand(5, 30) * 3
    out = module.inference(x, None, torch.zeros(5, 1))
    memory, pad = out[MODULE_KEYS.MEMORY_KEY], out[MODULE_KEYS.MEMORY_PAD_KEY]
    batch = torch.zeros(5, 1)
    alone = module.restore(memory, pad, torch.tensor([3, 7]), batch)
    crowded = module.restore(memory, pad, torch.tensor([11, 3, 29, 7, 0]), batch)
    torch.testing.assert_close(alone, crowded[:, [1, 3]], rtol=0, atol=1e-6)


def test_loss_is_positive_and_backpropagates():
    module = _module().train()
    x = torch.rand(8, 30) * 3
    inference = module.inference(x, None, torch.zeros(8, 1))
    generative = module.generative(**module._get_generative_input({}, inference))
    loss = module.loss({}, inference, generative)
    assert loss.loss > 0
    assert set(loss.extra_metrics) == {"masked_mse", "bottleneck_mse"}
    loss.loss.backward()
    assert module.gene_emb.weight.grad.abs().sum() > 0


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match=r"`d_model` \(10\) must be divisible by `n_heads` \(4\)"):
        MultiHeadAttention(10, 4)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_encode_samples_draws_everything_from_the_generator():
    module = _module(mask_ratio=0.25).train()
    x = torch.rand(6, 30) * 3
    batch = torch.zeros(6, 1)
    kwargs = {"context": "random", "hide_fraction": 0.25, "draw_targets": True}
    first = module.encode_samples(x, None, batch, generator=_generator(1), **kwargs)
    torch.manual_seed(123)  # the global RNG must not matter
    again = module.encode_samples(x, None, batch, generator=_generator(1), **kwargs)
    other = module.encode_samples(x, None, batch, generator=_generator(2), **kwargs)
    for key in (MODULE_KEYS.CONTEXT_IDX_KEY, MODULE_KEYS.HIDDEN_KEY, MODULE_KEYS.TARGET_IDX_KEY):
        assert torch.equal(first[key], again[key])
    assert not torch.equal(first[MODULE_KEYS.CONTEXT_IDX_KEY], other[MODULE_KEYS.CONTEXT_IDX_KEY])
    assert first[MODULE_KEYS.HIDDEN_KEY].sum(1).tolist() == [3] * 6  # 0.25 of 12 context genes


def test_encode_samples_policies():
    module = _module(n_inference_context=20).eval()
    x = torch.rand(3, 30) * 3
    batch = torch.zeros(3, 1)
    fixed = module.encode_samples(x, None, batch)
    assert fixed[MODULE_KEYS.CONTEXT_IDX_KEY].shape == (3, 20)
    assert not fixed[MODULE_KEYS.HIDDEN_KEY].any() and fixed[MODULE_KEYS.TARGET_IDX_KEY] is None
    assert torch.equal(module.encode_samples(x, None, batch)[MODULE_KEYS.Z_KEY], fixed["z"])
    # panel dropout for a head: a random context, nothing hidden, no targets
    panel = module.encode_samples(x, None, batch, context="random", generator=_generator())
    assert panel[MODULE_KEYS.CONTEXT_IDX_KEY].shape == (3, 12)
    assert not panel[MODULE_KEYS.HIDDEN_KEY].any() and panel[MODULE_KEYS.TARGET_IDX_KEY] is None
    # eval-mode `inference` is the fixed context; training mode the pretraining encoding
    assert torch.equal(module.inference(x, None, batch)[MODULE_KEYS.Z_KEY], fixed["z"])
    module.train()
    assert module.inference(x, None, batch)[MODULE_KEYS.TARGET_IDX_KEY] is not None
    with pytest.raises(ValueError, match="`context` must be one of"):
        module.encode_samples(x, context="all")
    with pytest.raises(ValueError, match=r"`hide_fraction` must be in \[0, 1\), got 1.0"):
        module.encode_samples(x, hide_fraction=1.0)


def test_cls_attention_weights_match_the_fused_attention():
    module = _module(n_layers=2, n_inference_context=20).eval()
    x = torch.rand(4, 30) * 3
    x[1, 5:] = float("nan")  # a short context: padding must get no weight
    out = module.encode_samples(x, None, torch.zeros(4, 1), attention="cls")
    weights = out[MODULE_KEYS.ATTENTION_KEY]
    assert weights.shape == (4, 2, 2, 1 + out[MODULE_KEYS.CONTEXT_IDX_KEY].shape[1])
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 2, 2))
    padding = out[MODULE_KEYS.MEMORY_PAD_KEY]
    assert (weights[padding[:, None, None, :].expand_as(weights)] == 0).all()
    # the same scores as the fused kernel: weights @ values gives the [CLS] attention output
    block = module.encoder[0]
    tokens = torch.randn(4, 6, 16)
    normed = block.norm_attn(tokens)
    w = block.attn.weights(normed[:, :1], normed).squeeze(-2)
    v = block.attn._split_heads(block.attn.kv_proj(normed).chunk(2, dim=-1)[1])
    by_hand = block.attn.out_proj((w.unsqueeze(-2) @ v).squeeze(-2).reshape(4, -1))
    torch.testing.assert_close(by_hand, block.attn(normed, normed)[:, 0], rtol=1e-5, atol=1e-5)
    # asking for weights does not change the encoding
    plain = module.encode_samples(x, None, torch.zeros(4, 1))
    torch.testing.assert_close(plain[MODULE_KEYS.Z_KEY], out[MODULE_KEYS.Z_KEY])
    # every row: its [CLS] row is the weights above, each row sums to one
    full = module.encode_samples(x, None, torch.zeros(4, 1), attention="all")
    rows = full[MODULE_KEYS.ATTENTION_KEY]
    assert rows.shape == (*weights.shape, weights.shape[-1])
    torch.testing.assert_close(rows[..., 0, :], weights)
    torch.testing.assert_close(rows.sum(-1), torch.ones(rows.shape[:-1]))


def test_validation_encoding_is_masked_restoration():
    module = _module()
    assert module.validation_encoding == {
        "context": "random",
        "hide_fraction": module.mask_ratio,
        "withhold": module.withhold_range,
        "draw_targets": True,
    }


def test_profile_fit_does_not_depend_on_which_genes_are_missing():
    module = _module(d_model=8, profile_fit=True)
    basis = module.profile_proj.detach() / module.n_vars**0.5
    torch.manual_seed(1)
    y = module.gene_mean + torch.randn(16, 8) @ basis.T  # profiles in the basis' span
    everything = torch.ones(16, 30, dtype=torch.bool)
    half = torch.rand(16, 30) < 0.5
    full_summary, _ = module.profile_summary(y, everything)
    fitted, coef = module.profile_summary(y, half)
    module.profile_fit = False
    projected, none = module.profile_summary(y, half)
    assert none is None and coef.shape == (16, 8)
    fit_error = (fitted - full_summary).norm() / full_summary.norm()
    projection_error = (projected - full_summary).norm() / full_summary.norm()
    assert fit_error < 0.5 * projection_error
