"""Torch modules (never see AnnData)."""

from gexbert_sc.module._gexbert import GexBERTModule

__all__ = ["GexBERTModule"]
