"""Choose the numeric precision that is fast on the machine at hand."""

from __future__ import annotations

import logging
import os
from typing import Literal, get_args

import torch

from gexbert_sc.utils import cpu_flags

logger = logging.getLogger(__name__)

Precision = Literal["auto", "32-true", "bf16-mixed", "16-mixed"]


#: Environment variable that overrides the CPU check: ``"1"`` (treat the CPU as having
#: native bf16), ``"0"`` (treat it as lacking it). The test suite sets it, so that
#: ``precision="auto"`` resolves the same on every machine.
CPU_BF16_ENV = "GEXBERT_CPU_BF16"


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX).

    ``GEXBERT_CPU_BF16=1`` or ``=0`` in the environment overrides the check.

    Returns
    -------
    ``True`` if ``"auto"`` precision should pick bf16 on this CPU.
    """
    override = os.environ.get(CPU_BF16_ENV)
    if override is None:
        return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    if override not in ("0", "1"):
        msg = f"`{CPU_BF16_ENV}` must be '0' or '1' when set, got {override!r}."
        raise ValueError(msg)
    return override == "1"


def resolve_precision(precision: Precision, on_gpu: bool) -> str:
    """Resolve ``"auto"`` to a Lightning precision string.

    ``"auto"`` picks ``"bf16-mixed"`` on a GPU that supports bf16 and on a CPU with native
    bf16 instructions (where bf16 matmuls run several times faster than fp32), and
    ``"32-true"`` elsewhere (bf16 without hardware support is emulated and slower).

    Parameters
    ----------
    precision
        One of :data:`Precision`.
    on_gpu
        Whether training or inference runs on a CUDA device.

    Returns
    -------
    A precision string accepted by :class:`lightning.pytorch.Trainer`.
    """
    if precision not in get_args(Precision):
        msg = f"`precision` must be one of {get_args(Precision)}, got {precision!r}."
        raise ValueError(msg)
    if precision != "auto":
        return precision
    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"


def autocast_context(precision: str, device: torch.device) -> torch.autocast:
    """Return a :func:`torch.autocast` context matching a resolved Lightning ``precision``.

    Parameters
    ----------
    precision
        A resolved precision (:func:`resolve_precision`).
    device
        Device the computation runs on.

    Returns
    -------
    An autocast context, disabled for ``"32-true"``.
    """
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
