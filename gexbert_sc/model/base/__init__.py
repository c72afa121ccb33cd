"""The GexBERT model family's base class and mixins (shared by every model class)."""

from gexbert_sc.model.base._attention import AttentionMethod, AttentionMixin
from gexbert_sc.model.base._base import GexBERTBase
from gexbert_sc.model.base._calibrating import CalibrationMixin
from gexbert_sc.model.base._encoding import EncodingMixin
from gexbert_sc.model.base._hparams import check_architecture
from gexbert_sc.model.base._importance import ImportanceMethod, ImportanceMixin, check_target
from gexbert_sc.model.base._model_check import check_model
from gexbert_sc.model.base._query import QueryMixin
from gexbert_sc.model.base._restoration import Imputation, RestorationMixin
from gexbert_sc.model.base._training import TrainingMixin, default_max_epochs

__all__ = [
    "AttentionMethod",
    "AttentionMixin",
    "CalibrationMixin",
    "EncodingMixin",
    "GexBERTBase",
    "ImportanceMethod",
    "ImportanceMixin",
    "Imputation",
    "QueryMixin",
    "RestorationMixin",
    "TrainingMixin",
    "check_architecture",
    "check_model",
    "check_target",
    "default_max_epochs",
]
