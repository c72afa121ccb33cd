import pytest
import torch

from gexbert_sc._constants import MODULE_KEYS, REGISTRY_KEYS
from gexbert_sc.module import GexBERTModule
from gexbert_sc.train import GexBERTTrainingPlan, resolve_precision, warmup_cosine


@pytest.mark.parametrize(
    ("step", "expected"), [(0, 0.1), (9, 1.0), (10, 1.0), (55, 0.5), (100, 0.0), (200, 0.0)]
)
def test_warmup_cosine(step, expected):
    assert warmup_cosine(step, warmup_steps=10, total_steps=100) == pytest.approx(expected)


def test_precision_choices(monkeypatch):
    assert resolve_precision("32-true", on_gpu=False) == "32-true"
    monkeypatch.setenv("GEXBERT_CPU_BF16", "1")
    assert resolve_precision("auto", on_gpu=False) == "bf16-mixed"
    monkeypatch.setenv("GEXBERT_CPU_BF16", "0")
    assert resolve_precision("auto", on_gpu=False) == "32-true"
    monkeypatch.setenv("GEXBERT_CPU_BF16", "yes")
    with pytest.raises(ValueError, match="`GEXBERT_CPU_BF16` must be '0' or '1'"):
        resolve_precision("auto", on_gpu=False)
    with pytest.raises(ValueError, match="`precision` must be one of"):
        resolve_precision("fp8", on_gpu=False)


class _PlainValidation(GexBERTModule):
    """A module that validates on the fixed context, as a task head may."""

    @property
    def validation_encoding(self) -> dict:
        return {"context": "fixed"}


def _plan(seed: int = 0, module_cls: type = GexBERTModule) -> GexBERTTrainingPlan:
    module = module_cls(30, d_model=16, n_layers=1, n_heads=2, n_levels=8, n_context=12)
    return GexBERTTrainingPlan(module, seed=seed)


def test_plan_generator_state_is_saved_and_restored():
    plan = _plan(seed=4)
    draws = torch.rand(5, generator=plan.generator("train", torch.device("cpu")))
    checkpoint = {}
    plan.on_save_checkpoint(checkpoint)
    after_save = torch.rand(5, generator=plan.generator("train", torch.device("cpu")))
    with pytest.raises(ValueError, match="with seed 4, but this run's seed is 99"):
        _plan(seed=99).on_load_checkpoint(checkpoint)
    # a fresh plan of that seed would draw `draws`: the state, not the seed, is restored
    resumed = _plan(seed=4)
    resumed.on_load_checkpoint(checkpoint)
    resumed_draws = torch.rand(5, generator=resumed.generator("train", torch.device("cpu")))
    assert torch.equal(resumed_draws, after_save)
    assert not torch.equal(draws, after_save)
    assert torch.equal(draws, torch.rand(5, generator=torch.Generator().manual_seed(4)))


def test_plan_encodes_with_the_modules_choice_and_its_generator():
    plan = _plan(seed=1)
    batch = {
        REGISTRY_KEYS.X_KEY: torch.rand(8, 30) * 3,
        REGISTRY_KEYS.BATCH_KEY: torch.zeros(8, 1),
    }
    plan.module.train()
    first = plan.forward(batch)[0]
    second = _plan(seed=1).forward(batch)[0]
    assert torch.equal(first[MODULE_KEYS.CONTEXT_IDX_KEY], second[MODULE_KEYS.CONTEXT_IDX_KEY])
    assert first[MODULE_KEYS.TARGET_IDX_KEY] is not None
    # validation: the module's validation encoding; pretraining's is masked, on the same
    # masks every validation epoch
    plan.module.eval()
    masked = plan.forward(batch)[0]
    assert masked[MODULE_KEYS.TARGET_VALID_KEY].any()
    plan.on_validation_epoch_start()
    again = plan.forward(batch)[0]
    for key in (MODULE_KEYS.TARGET_IDX_KEY, MODULE_KEYS.TARGET_VALID_KEY):
        assert torch.equal(masked[key], again[key])
    plain = _plan(module_cls=_PlainValidation)
    plain.module.eval()
    out = plain.forward(batch, compute_loss=False)[0]
    assert out[MODULE_KEYS.TARGET_IDX_KEY] is None and not out[MODULE_KEYS.HIDDEN_KEY].any()


class _GradientNorms:
    """Lightning callback: the total gradient norm as the optimiser stepped, and its kind."""

    def __new__(cls):
        from lightning.pytorch.callbacks import Callback

        class GradientNorms(Callback):
            norms: list[float] = []
            fused: list[bool] = []

            def on_train_batch_end(self, trainer, module, *args) -> None:
                grads = [p.grad for p in module.parameters() if p.grad is not None]
                self.norms.append(float(torch.nn.utils.get_total_norm(grads)))
                self.fused.append(bool(trainer.optimizers[0].defaults["fused"]))

        return GradientNorms()


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_fused_adamw_steps_on_clipped_gradients(precision, algorithm):
    """The optimiser is torch's fused AdamW, and the gradients it reads are clipped.

    (Lightning's mixed-precision plugin refuses to clip for a fused optimiser; the plan clips
    itself where no loss scaler is involved.)
    """
    from helpers import TINY_MODEL, make_counts_adata

    import gexbert_sc

    adata = make_counts_adata()
    gexbert_sc.GexBERT.setup_anndata(adata)
    model = gexbert_sc.GexBERT(adata, **TINY_MODEL)
    norms = _GradientNorms()
    clip = 1e-3
    model.train(
        max_epochs=1,
        batch_size=32,
        precision=precision,
        gradient_clip_val=clip,
        gradient_clip_algorithm=algorithm,
        callbacks=[norms],
        enable_progress_bar=False,
    )
    assert norms.fused and all(norms.fused)
    n_entries = sum(p.numel() for p in model.module.parameters())
    bound = clip if algorithm == "norm" else clip * n_entries**0.5
    assert max(norms.norms) <= bound * (1 + 1e-4)
    assert max(norms.norms) > 0
