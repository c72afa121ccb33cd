"""Data handling: input scale, normalisation, per-gene statistics, gene alignment."""

from gexbert_sc.data._alignment import AlignmentReport, align_genes, check_var_names
from gexbert_sc.data._input_scale import InputScale, resolve_input_scale
from gexbert_sc.data._split import default_validation_indices
from gexbert_sc.data._statistics import ExpressionStatistics, fit_expression_statistics

__all__ = [
    "AlignmentReport",
    "ExpressionStatistics",
    "InputScale",
    "align_genes",
    "check_var_names",
    "default_validation_indices",
    "fit_expression_statistics",
    "resolve_input_scale",
]
