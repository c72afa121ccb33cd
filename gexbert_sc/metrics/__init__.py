"""Evaluation metrics for embeddings and restorations."""

from gexbert_sc.metrics._knn import knn_label_accuracy

__all__ = ["knn_label_accuracy"]
