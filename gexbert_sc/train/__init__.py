"""Lightning training plan (sees a module and batches, never AnnData)."""

from gexbert_sc.train._plan import GexBERTTrainingPlan, warmup_cosine
from gexbert_sc.train._precision import (
    Precision,
    autocast_context,
    cpu_supports_bf16,
    resolve_precision,
)

__all__ = [
    "GexBERTTrainingPlan",
    "Precision",
    "autocast_context",
    "cpu_supports_bf16",
    "resolve_precision",
    "warmup_cosine",
]
