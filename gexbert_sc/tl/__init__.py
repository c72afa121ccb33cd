"""Scanpy-style writers: compute with a model, write into AnnData."""

from gexbert_sc.tl._attention import rank_genes_attention, rank_genes_mean
from gexbert_sc.tl._embed import embed
from gexbert_sc.tl._genes import gene_embedding, gene_similarity
from gexbert_sc.tl._importance import rank_genes_importance
from gexbert_sc.tl._impute import impute
from gexbert_sc.tl._predict import predict
from gexbert_sc.tl._survival import predict_risk, select_anchor_genes

__all__ = [
    "embed",
    "gene_embedding",
    "gene_similarity",
    "impute",
    "predict",
    "predict_risk",
    "rank_genes_attention",
    "rank_genes_importance",
    "rank_genes_mean",
    "select_anchor_genes",
]
