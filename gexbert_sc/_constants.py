"""Registry keys, tensor-dict keys and default output keys, written once."""

from __future__ import annotations

from typing import NamedTuple


class _RegistryKeys(NamedTuple):
    X_KEY: str = "X"
    BATCH_KEY: str = "batch"
    LABELS_KEY: str = "labels"
    MISSING_KEY: str = "missing"
    TIME_KEY: str = "survival_time"
    EVENT_KEY: str = "survival_event"


class _ModuleKeys(NamedTuple):
    X_KEY: str = "x"
    MISSING_KEY: str = "missing"
    BATCH_KEY: str = "batch_index"
    Z_KEY: str = "z"
    MEMORY_KEY: str = "memory"
    MEMORY_PAD_KEY: str = "memory_pad"
    OBSERVED_KEY: str = "observed"
    SIZE_FACTOR_KEY: str = "size_factor"
    TARGET_IDX_KEY: str = "target_idx"
    TARGET_KEY: str = "target"
    TARGET_VALID_KEY: str = "target_valid"
    PRED_KEY: str = "pred"
    PRED_BOTTLENECK_KEY: str = "pred_bottleneck"
    CONTEXT_IDX_KEY: str = "context_idx"
    CONTEXT_VALID_KEY: str = "context_valid"
    HIDDEN_KEY: str = "hidden"
    ATTENTION_KEY: str = "cls_attention"
    PROFILE_COEF_KEY: str = "profile_coef"


class _OutputKeys(NamedTuple):
    EMBEDDING: str = "X_gexbert"
    IMPUTED: str = "gexbert_imputed"
    IMPUTED_MASK_SUFFIX: str = "_mask"
    IMPUTED_STD_SUFFIX: str = "_std"
    IMPUTED_LOWER_SUFFIX: str = "_lower"
    IMPUTED_UPPER_SUFFIX: str = "_upper"
    PREDICTION: str = "gexbert_prediction"
    CONFIDENCE_SUFFIX: str = "_confidence"
    PROBA_SUFFIX: str = "_proba"
    RISK: str = "gexbert_risk"
    ANCHOR: str = "gexbert_anchor"
    RANK_ATTENTION: str = "rank_genes_attention"
    RANK_IMPORTANCE: str = "rank_genes_gexbert"
    RANK_MEAN: str = "rank_genes_mean"
    GENE_EMBEDDING: str = "gexbert_gene_embedding"
    UNS: str = "gexbert"
    UNS_OUTPUTS: str = "outputs"
    ALIGNMENT_UNS: str = "gexbert_alignment"
    DATASET_UNS: str = "gexbert_dataset"


REGISTRY_KEYS = _RegistryKeys()
MODULE_KEYS = _ModuleKeys()
OUTPUT_KEYS = _OutputKeys()

#: Genes restored at once by the getters and ``tl.impute`` (bounds memory, not the result).
QUERY_CHUNK_SIZE = 1024
