"""Torch modules (never see AnnData)."""

from gexbert_sc.module._attention import FFN_FACTOR
from gexbert_sc.module._cost import decoder_flops, encoder_flops
from gexbert_sc.module._encoder import ContextPolicy, ExpressionEncoder
from gexbert_sc.module._gexbert import GexBERTModule

__all__ = [
    "FFN_FACTOR",
    "ContextPolicy",
    "ExpressionEncoder",
    "GexBERTModule",
    "decoder_flops",
    "encoder_flops",
]
