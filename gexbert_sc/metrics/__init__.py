"""Evaluation metrics for embeddings, restorations and survival predictions."""

from gexbert_sc.metrics._attention import attention_ablation, ranking_overlap
from gexbert_sc.metrics._importance import DeletionTest, deletion_curve
from gexbert_sc.metrics._imputation import (
    gene_correlations,
    mask_entries,
    mask_genes,
    masked_rmse,
    median_gene_correlation,
)
from gexbert_sc.metrics._intervals import (
    calibration_curve,
    interval_coverage,
    interval_width,
    worst_gene_coverage,
)
from gexbert_sc.metrics._knn import knn_label_accuracy, knn_transfer_accuracy
from gexbert_sc.metrics._spatial import accuracy_score, spatial_gene_scores
from gexbert_sc.metrics._survival import (
    ScoreTest,
    concordance_index,
    cox_score_test,
    logrank_pvalue,
)

__all__ = [
    "DeletionTest",
    "ScoreTest",
    "accuracy_score",
    "attention_ablation",
    "calibration_curve",
    "concordance_index",
    "cox_score_test",
    "deletion_curve",
    "gene_correlations",
    "interval_coverage",
    "interval_width",
    "logrank_pvalue",
    "knn_label_accuracy",
    "knn_transfer_accuracy",
    "mask_entries",
    "mask_genes",
    "masked_rmse",
    "median_gene_correlation",
    "ranking_overlap",
    "spatial_gene_scores",
    "worst_gene_coverage",
]
