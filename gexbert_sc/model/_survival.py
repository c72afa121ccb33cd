"""GexBERTSurvival: a Cox model, built on a pretrained GexBERT, that reads any gene panel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gexbert_sc.data._fields import anndata_fields
from gexbert_sc.data._input_scale import InputScale
from gexbert_sc.data._survival import survival_data, survival_fields
from gexbert_sc.model._task import GexBERTTaskModel
from gexbert_sc.model.base import check_target
from gexbert_sc.model.base._importance_targets import HeadOutput, ImportanceTarget
from gexbert_sc.module import GexBERTSurvivalModule
from gexbert_sc.module._survival import Ties

if TYPE_CHECKING:
    from typing import Self

    from anndata import AnnData

    from gexbert_sc.model.base import GexBERTBase
    from gexbert_sc.train import Precision


class GexBERTSurvival(GexBERTTaskModel):
    """Predict a sample's risk from any panel of genes, with a Cox head on a pretrained GexBERT.

    Build it with :meth:`from_gexbert_model` (as ``SCANVI.from_scvi_model``). The head maps
    the sample embedding to a log relative hazard; training maximises the Cox partial
    likelihood of each minibatch (Efron or Breslow ties; the risk sets are formed within the
    minibatch, hence the large default ``batch_size`` of :meth:`train`, see
    :doc:`/survival`) while keeping a random panel of each sample's observed genes at every
    step, as :class:`~gexbert_sc.GexBERTClassifier` does, so that the one model serves
    whole profiles and small panels alike.

    Parameters
    ----------
    adata
        AnnData set up with :meth:`setup_anndata`.
    registry
        Registry of the pretrained or saved model (:meth:`from_gexbert_model` and
        :meth:`load` pass it).
    ties
        How tied event times enter the partial likelihood: ``"efron"`` (default, as
        lifelines) or ``"breslow"``.
    n_hidden, head_dropout, min_panel_genes, freeze_encoder, encoder_lr_scale, seed
        As in :class:`~gexbert_sc.GexBERTClassifier`.
    **architecture
        The pretrained model's hyper-parameters.
    """

    _module_cls = GexBERTSurvivalModule
    #: Risk sets are formed within a minibatch: larger minibatches rank more samples.
    _default_batch_size = 256

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        *,
        ties: Ties = "efron",
        n_hidden: int = 128,
        head_dropout: float = 0.1,
        min_panel_genes: int = 16,
        freeze_encoder: bool = False,
        encoder_lr_scale: float = 0.1,
        seed: int | None = None,
        **architecture: Any,
    ):
        if ties not in ("efron", "breslow"):
            msg = f"`ties` must be 'efron' or 'breslow', got {ties!r}."
            raise ValueError(msg)
        self._ties = ties
        super().__init__(
            adata,
            registry,
            n_hidden=n_hidden,
            head_dropout=head_dropout,
            min_panel_genes=min_panel_genes,
            freeze_encoder=freeze_encoder,
            encoder_lr_scale=encoder_lr_scale,
            seed=seed,
            **architecture,
        )
        self.init_params_ = self._get_init_params(locals())

    def _task_module_kwargs(self) -> dict[str, Any]:
        """Return the tie handling of the partial likelihood."""
        return {"ties": self._ties}

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        time_key: str,
        event_key: str,
        layer: str | None = None,
        batch_key: str | None = None,
        missing_layer: str | None = None,
        input_scale: InputScale = "auto",
        **kwargs: Any,
    ) -> None:
        """Set up an AnnData for a survival model (:meth:`from_gexbert_model` calls this).

        Parameters
        ----------
        adata
            AnnData with the pretrained model's genes, in its order.
        time_key
            ``obs`` column of follow-up times (to the event or to censoring): numeric,
            finite, non-negative.
        event_key
            ``obs`` column of event indicators: boolean or 0/1 (1: event observed).
        layer, batch_key, missing_layer, input_scale
            As in :meth:`gexbert_sc.GexBERT.setup_anndata`.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields` (used by ``load``).

        Raises
        ------
        KeyError, TypeError, ValueError
            For a missing column or invalid times or events (see
            :func:`gexbert_sc.data.survival_data`), before anything is registered.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        survival_data(adata, time_key, event_key)
        fields, scale = anndata_fields(
            adata,
            layer=layer,
            batch_key=batch_key,
            labels_key=None,
            missing_layer=missing_layer,
            input_scale=input_scale,
        )
        fields += survival_fields(time_key, event_key)
        cls._register(adata, fields, setup_method_args, kwargs, scale)

    @classmethod
    def from_gexbert_model(
        cls,
        gexbert_model: GexBERTBase,
        time_key: str,
        event_key: str,
        adata: AnnData | None = None,
        **survival_kwargs: Any,
    ) -> Self:
        """Build a survival model on a pretrained model, as ``SCANVI.from_scvi_model`` does.

        The pretrained weights and statistics are loaded; the head is new. ``adata`` is set
        up with the pretrained model's expression arguments and the survival columns.

        Parameters
        ----------
        gexbert_model
            A trained :class:`~gexbert_sc.GexBERT`.
        time_key
            ``obs`` column of follow-up times.
        event_key
            ``obs`` column of event indicators (boolean or 0/1).
        adata
            AnnData to train on, with the pretrained model's genes in its order; default:
            the pretrained model's.
        **survival_kwargs
            Arguments of :class:`GexBERTSurvival` (``ties``, ``freeze_encoder``, ...).

        Returns
        -------
        The untrained survival model.
        """
        adata = cls._task_data(gexbert_model, adata)
        cls._setup_on_pretrained(gexbert_model, adata, time_key=time_key, event_key=event_key)
        return cls._from_pretrained(gexbert_model, adata, **survival_kwargs)

    # ------------------------------------------------------------------ prediction
    def predict_risk(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        *,
        memory_budget: int | str | None = None,
        precision: Precision = "32-true",
    ) -> pd.Series:
        """Predict each sample's risk (log relative hazard) from the genes it has.

        Parameters
        ----------
        adata
            AnnData with the model's genes in its order (NaN where a gene was not measured:
            align a panel with :func:`gexbert_sc.data.align_genes`); default: the training
            AnnData. Its survival columns, if any, are not read.
        indices
            Samples to predict (default: all).
        batch_size, memory_budget, precision
            As in :meth:`get_latent_representation` (the result does not depend on the batch
            size).

        Returns
        -------
        A float :class:`~pandas.Series` of log relative hazards indexed by the samples'
        names: higher is a worse prognosis. Only differences between samples mean anything
        (the Cox model leaves the baseline hazard out).
        """
        risk, names = self._head_outputs(adata, indices, batch_size, memory_budget, precision)
        return pd.Series(risk[:, 0], index=names, name="risk")

    def _importance_target(
        self, target: str | None, adata: AnnData | None, rows: np.ndarray
    ) -> ImportanceTarget:
        """Explain the log relative hazard (``"risk"``, the only target)."""
        check_target(target, ("risk",), "GexBERTSurvival")
        return HeadOutput()

    def _placeholder_obs(self) -> dict[str, Any]:
        return {self.time_key: 1.0, self.event_key: 1.0}

    @property
    def time_key(self) -> str:
        """``obs`` column of follow-up times the model was trained on."""
        return self.registry_["setup_args"]["time_key"]

    @property
    def event_key(self) -> str:
        """``obs`` column of event indicators the model was trained on."""
        return self.registry_["setup_args"]["event_key"]
