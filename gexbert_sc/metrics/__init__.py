"""Evaluation metrics for embeddings and restorations."""

from gexbert_sc.metrics._imputation import (
    mask_entries,
    mask_genes,
    masked_rmse,
    median_gene_correlation,
)
from gexbert_sc.metrics._knn import knn_label_accuracy, knn_transfer_accuracy

__all__ = [
    "knn_label_accuracy",
    "knn_transfer_accuracy",
    "mask_entries",
    "mask_genes",
    "masked_rmse",
    "median_gene_correlation",
]
