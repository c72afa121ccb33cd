import pytest

from gexbert_sc.train import resolve_precision, warmup_cosine


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
