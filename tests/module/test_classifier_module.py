import math

import pytest
import torch
import torch.nn.functional as F

from gexbert_sc._constants import MODULE_KEYS, REGISTRY_KEYS
from gexbert_sc.module import GexBERTClassifierModule, MLPHead
from gexbert_sc.module._masking import withhold_outside_panel
from gexbert_sc.module._task import HEAD_KEY


def _classifier(**kwargs) -> GexBERTClassifierModule:
    torch.manual_seed(0)
    edges = torch.linspace(0.5, 3.0, 6).expand(30, 6).clone()
    defaults = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_levels": 8, "n_context": 12}
    return GexBERTClassifierModule(30, n_classes=3, bin_edges=edges, **{**defaults, **kwargs})


def test_panel_sizes_are_log_uniform_between_the_minimum_and_all_observed_genes():
    observed = torch.ones(4000, 1000, dtype=torch.bool)
    observed[:, :200] = False
    generator = torch.Generator().manual_seed(0)
    withheld = withhold_outside_panel(observed, 16, generator)
    assert not withheld[:, :200].any()
    kept = (observed & ~withheld).sum(1).float()
    assert kept.min() >= 16 and kept.max() <= 800
    # log-uniform: the median panel is the geometric mean of 16 and 800 (113)
    assert abs(kept.median().item() - math.sqrt(16 * 800)) < 10
    per_gene = (observed & ~withheld)[:, 200:].float().mean(0)
    assert per_gene.std() < 0.03
    again = withhold_outside_panel(observed, 16, torch.Generator().manual_seed(0))
    assert torch.equal(withheld, again)


def test_samples_with_fewer_genes_than_the_minimum_keep_them_all():
    observed = torch.zeros(5, 50, dtype=torch.bool)
    observed[:, :8] = True
    assert not withhold_outside_panel(observed, 16).any()


def test_training_encoding_reads_a_panel_and_hides_nothing():
    module = _classifier(min_panel_genes=2).train()
    x = torch.rand(64, 30) * 3 + 0.1
    out = module.inference(x, None, torch.zeros(64, 1))
    assert out[MODULE_KEYS.TARGET_IDX_KEY] is None
    assert not out[MODULE_KEYS.HIDDEN_KEY].any()
    read = out[MODULE_KEYS.CONTEXT_VALID_KEY].sum(1)
    assert read.min() >= 2 and read.max() == 12 and (read < 12).any()
    with pytest.raises(ValueError, match="not both"):
        module.encode_samples(x, withhold=(0.1, 0.5), panel_min_genes=4)


def test_loss_is_the_weighted_cross_entropy_of_labelled_samples():
    weights = torch.tensor([1.0, 2.0, 0.5])
    module = _classifier(class_weights=weights)
    logits = torch.randn(6, 3)
    labels = torch.tensor([0, 1, 2, 3, 1, 3])  # code 3: the unlabelled category
    loss = module.loss({REGISTRY_KEYS.LABELS_KEY: labels.view(-1, 1)}, {}, {HEAD_KEY: logits})
    expected = F.cross_entropy(logits[labels < 3], labels[labels < 3], weight=weights)
    torch.testing.assert_close(loss.loss, expected)
    assert set(loss.extra_metrics) == {"cross_entropy", "accuracy"}
    none = torch.full((4, 1), 3)
    assert module.loss({REGISTRY_KEYS.LABELS_KEY: none}, {}, {HEAD_KEY: logits[:4]}).loss == 0


def test_frozen_module_trains_only_the_head():
    module = _classifier(freeze_encoder=True)
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    assert trainable == {f"head.{name}" for name, _ in module.head.named_parameters()}
    assert len(module.parameter_groups(1e-3)) == 1


def test_head_maps_embeddings_to_logits():
    head = MLPHead(16, 5, n_hidden=8)
    assert head.n_outputs == 5
    assert head(torch.randn(3, 16)).shape == (3, 5)
