"""User-facing model classes."""

from gexbert_sc.model._gexbert import GexBERT, default_max_epochs

__all__ = ["GexBERT", "default_max_epochs"]
