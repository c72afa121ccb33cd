"""Scanpy-style plots of GexBERT outputs (each returns its matplotlib ``Axes``)."""

from gexbert_sc.pl._attention import rank_genes_attention
from gexbert_sc.pl._calibration import calibration
from gexbert_sc.pl._gene_embedding import gene_embedding_umap
from gexbert_sc.pl._importance import deletion_curve
from gexbert_sc.pl._restoration import restoration_scatter
from gexbert_sc.pl._survival import kaplan_meier
from gexbert_sc.pl._training import loss_curves

__all__ = [
    "calibration",
    "deletion_curve",
    "gene_embedding_umap",
    "kaplan_meier",
    "loss_curves",
    "rank_genes_attention",
    "restoration_scatter",
]
