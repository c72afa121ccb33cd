"""gexbert_sc: GexBERT masked-expression transformer for AnnData."""

from importlib.metadata import PackageNotFoundError, version

import rich.pretty  # noqa: F401  (scvi-tools 1.4.2 + rich>=15: view_anndata_setup needs it)

from gexbert_sc import data, datasets, metrics, pl, tl
from gexbert_sc.model import GexBERT, GexBERTClassifier, GexBERTSurvival

try:
    __version__ = version("gexbert-sc")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "GexBERT",
    "GexBERTClassifier",
    "GexBERTSurvival",
    "data",
    "datasets",
    "metrics",
    "pl",
    "tl",
    "__version__",
]
