"""Lightning training plan (sees a module and batches, never AnnData)."""

from gexbert_sc.train._best_weights import RestoreBestWeights
from gexbert_sc.train._checkpoint import AtomicCheckpoint, checkpoint_files
from gexbert_sc.train._distributed import DistributedTrainingError
from gexbert_sc.train._plan import GexBERTTrainingPlan, warmup_cosine
from gexbert_sc.train._precision import (
    Precision,
    autocast_context,
    cpu_supports_bf16,
    resolve_precision,
)

__all__ = [
    "AtomicCheckpoint",
    "DistributedTrainingError",
    "GexBERTTrainingPlan",
    "Precision",
    "RestoreBestWeights",
    "autocast_context",
    "checkpoint_files",
    "cpu_supports_bf16",
    "resolve_precision",
    "warmup_cosine",
]
