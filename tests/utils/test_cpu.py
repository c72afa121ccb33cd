import os
import platform

import pytest

from gexbert_sc.train import cpu_supports_bf16
from gexbert_sc.utils import cpu_flags, cpu_has_amx


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="reads Linux's /proc/cpuinfo")
def test_cpu_flags_are_the_first_processors_flags():
    flags = cpu_flags()
    assert isinstance(flags, frozenset)
    if platform.machine() in ("x86_64", "AMD64"):
        assert {"sse2", "fpu"} <= flags  # every x86-64 CPU has them
    assert cpu_has_amx() == ("amx_bf16" in flags)


def test_bf16_support_follows_the_flags_unless_overridden(monkeypatch):
    monkeypatch.delenv("GEXBERT_CPU_BF16", raising=False)
    assert cpu_supports_bf16() == bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    monkeypatch.setenv("GEXBERT_CPU_BF16", "1")
    assert cpu_supports_bf16()
