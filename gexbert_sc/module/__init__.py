"""Torch modules (never see AnnData)."""

from gexbert_sc.module._attention import FFN_FACTOR
from gexbert_sc.module._classifier import GexBERTClassifierModule
from gexbert_sc.module._cost import bottleneck_flops, decoder_flops, encoder_flops
from gexbert_sc.module._encoder import ContextPolicy, ExpressionEncoder
from gexbert_sc.module._gexbert import GexBERTModule
from gexbert_sc.module._heads import MLPHead
from gexbert_sc.module._survival import GexBERTSurvivalModule
from gexbert_sc.module._task import GexBERTTaskModule

__all__ = [
    "FFN_FACTOR",
    "MLPHead",
    "ContextPolicy",
    "ExpressionEncoder",
    "GexBERTClassifierModule",
    "GexBERTModule",
    "GexBERTSurvivalModule",
    "GexBERTTaskModule",
    "bottleneck_flops",
    "decoder_flops",
    "encoder_flops",
]
