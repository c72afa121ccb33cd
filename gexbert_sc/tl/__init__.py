"""Scanpy-style writers: compute with a model, write into AnnData."""

from gexbert_sc.tl._embed import embed
from gexbert_sc.tl._impute import impute
from gexbert_sc.tl._predict import predict
from gexbert_sc.tl._survival import predict_risk, select_anchor_genes

__all__ = ["embed", "impute", "predict", "predict_risk", "select_anchor_genes"]
