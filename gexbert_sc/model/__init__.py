"""User-facing model classes."""

from gexbert_sc.model._classifier import GexBERTClassifier
from gexbert_sc.model._gexbert import GexBERT
from gexbert_sc.model._survival import GexBERTSurvival
from gexbert_sc.model.base import GexBERTBase, Imputation, default_max_epochs

__all__ = [
    "GexBERT",
    "GexBERTBase",
    "GexBERTClassifier",
    "GexBERTSurvival",
    "Imputation",
    "default_max_epochs",
]
