"""The user-facing GexBERT model."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
from scvi.data.fields import MuDataCategoricalObsField, MuDataLayerField
from scvi.utils import setup_anndata_dsp

from gexbert_sc._constants import REGISTRY_KEYS
from gexbert_sc.data._fields import anndata_fields
from gexbert_sc.data._input_scale import InputScale
from gexbert_sc.data._validation import check_expression_setup, check_obs_key, expression_data
from gexbert_sc.model.base import (
    AttentionMixin,
    CalibrationMixin,
    EncodingMixin,
    GexBERTBase,
    ImportanceMixin,
    QueryMixin,
    RestorationMixin,
    TrainingMixin,
    check_architecture,
    check_target,
)
from gexbert_sc.model.base._importance_targets import (
    EmbeddingShift,
    ImportanceTarget,
    RestorationError,
)

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

logger = logging.getLogger(__name__)


class GexBERT(
    QueryMixin,
    CalibrationMixin,
    RestorationMixin,
    ImportanceMixin,
    AttentionMixin,
    EncodingMixin,
    TrainingMixin,
    GexBERTBase,
):
    """GexBERT masked-expression transformer autoencoder :cite:p:`Jiang2025`.

    Genes are tokens (gene embedding + binned expression-level embedding; a learned *missing*
    embedding for unknown values). The encoder reads ``[CLS]`` plus a random subset of observed
    genes; a cross-attention decoder restores hidden genes. The ``[CLS]`` output is the sample
    embedding (:meth:`get_latent_representation`); the decoder restores any gene of the
    vocabulary (:meth:`get_imputed_expression`). New data sets are mapped onto a trained
    model with :meth:`prepare_query_anndata` and :meth:`load_query_data`.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`. Per-gene statistics (library shares,
        quantile bin edges, means) are fitted on it: pass training samples only.
    registry
        Registry of a saved or pretrained model (:meth:`load` passes it). Statistics are
        fitted on ``adata`` only when it is ``None``; with it, the weights and statistics
        are to be loaded into the new model.
    d_model
        Token width. Width matters more than depth for restoration.
    n_layers
        Encoder blocks.
    n_decoder_layers
        Cross-attention decoder blocks.
    n_heads
        Attention heads (must divide ``d_model``).
    n_levels
        Expression levels including the reserved zero level.
    n_context
        Observed genes per sample per training step (attention is quadratic in this).
    n_inference_context
        Observed genes per sample read by the getters (non-zero first; 256, the default
        ``n_context``: on pbmc68k, zeisel and tcga_mirna 256 kept the kNN accuracy and
        restoration RMSE of 1,024 at a fraction of the cost, see :doc:`/performance`).
    mask_ratio
        Fraction of the training context additionally hidden (replaced by the missing
        embedding) and restored; 0 by default, since inference never hides a token.
    withhold_range
        Each training step withholds a share of each sample's observed genes, drawn
        uniformly in this range, chosen irrespective of their values, and restores them: the
        model learns on genes that are missing the way unmeasured genes are at inference.
        ``None``: restore observed genes outside the context (the scheme of 0.1, which
        learns that genes outside a non-zero-first context are mostly zeros; see
        :doc:`/design`).
    profile_fit
        Summarise each profile by a ridge least-squares fit on the learned profile basis
        and add the fit's low-rank reconstruction to every restoration (``False``: the
        rescaled projection of 0.1).
    cls_summary
        Add the profile summary to the ``[CLS]`` token's input (``False``: ``[CLS]`` learns
        about the sample through attention alone; measured in :doc:`/interpretability`).
    bottleneck_weight
        Weight of the restoration loss computed from ``[CLS]`` alone; it is what makes
        ``X_gexbert`` a good sample summary. 0 trains by restoration only.
    dropout
        Dropout rate.
    seed
        Seed of weight initialisation and training. ``None`` uses ``scvi.settings.seed`` if it
        is set, else 0: a model is reproducible by default.

    Examples
    --------
    >>> import gexbert_sc
    >>> adata = gexbert_sc.datasets.pbmc68k()
    >>> gexbert_sc.GexBERT.setup_anndata(adata)
    >>> model = gexbert_sc.GexBERT(adata)
    >>> model.train(max_epochs=2)
    >>> gexbert_sc.tl.embed(adata, model)
    >>> adata.obsm["X_gexbert"].shape
    (700, 128)
    """

    def __init__(
        self,
        adata: AnnData | None = None,
        registry: dict | None = None,
        *,
        d_model: int = 128,
        n_layers: int = 2,
        n_decoder_layers: int = 1,
        n_heads: int = 4,
        n_levels: int = 32,
        n_context: int = 256,
        n_inference_context: int = 256,
        mask_ratio: float = 0.0,
        withhold_range: tuple[float, float] | None = (0.1, 0.9),
        profile_fit: bool = True,
        cls_summary: bool = True,
        bottleneck_weight: float = 1.0,
        dropout: float = 0.0,
        seed: int | None = None,
    ):
        architecture = {
            "d_model": d_model,
            "n_layers": n_layers,
            "n_decoder_layers": n_decoder_layers,
            "n_heads": n_heads,
            "n_levels": n_levels,
            "n_context": n_context,
            "n_inference_context": n_inference_context,
            "mask_ratio": mask_ratio,
            "withhold_range": withhold_range,
            "profile_fit": profile_fit,
            "cls_summary": cls_summary,
            "bottleneck_weight": bottleneck_weight,
            "dropout": dropout,
        }
        check_architecture(**architecture, seed=seed)
        super().__init__(adata, registry, seed=seed, module_kwargs=architecture)
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------------ setup
    @classmethod
    @setup_anndata_dsp.dedent
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        missing_layer: str | None = None,
        input_scale: InputScale = "auto",
        **kwargs,
    ) -> None:
        """%(summary)s.

        Parameters
        ----------
        %(param_adata)s
        layer
            Layer with expression values; ``None`` uses ``adata.X``. Dense or sparse (CSR),
            counts or log-normalised values. NaN entries mean *missing* (not zero).
        %(param_batch_key)s
        %(param_labels_key)s
        missing_layer
            Optional boolean layer, ``True`` where a value is missing (an alternative to NaN).
        input_scale
            ``"counts"`` (library-size normalised and log1p'd inside the model), ``"log"``
            (used as given) or ``"auto"`` (counts if every value is a non-negative integer).
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields` (used by ``load``).
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        fields, scale = anndata_fields(
            adata,
            layer=layer,
            batch_key=batch_key,
            labels_key=labels_key,
            missing_layer=missing_layer,
            input_scale=input_scale,
        )
        cls._register(adata, fields, setup_method_args, kwargs, scale)

    @classmethod
    def setup_mudata(
        cls,
        mdata: MuData,
        rna_layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        missing_layer: str | None = None,
        input_scale: InputScale = "auto",
        modalities: dict[str, str] | None = None,
        **kwargs,
    ) -> None:
        """Set up a :class:`~mudata.MuData` whose expression is one modality.

        Every sample of ``mdata`` must be a sample of the expression modality. Embeddings are
        written to the global ``mdata.obsm``, imputed values to the modality's ``layers``.

        Parameters
        ----------
        mdata
            MuData object.
        rna_layer
            Layer of the expression modality holding the values; ``None`` uses its ``X``.
            Same conventions as ``layer`` in :meth:`setup_anndata` (NaN = missing).
        batch_key
            ``obs`` column of the batch (of ``mdata.obs`` unless ``modalities`` names a
            modality for ``"batch_key"``).
        labels_key
            ``obs`` column of the labels (same lookup as ``batch_key``).
        missing_layer
            Optional boolean layer of the expression modality, ``True`` where missing.
        input_scale
            ``"counts"``, ``"log"`` or ``"auto"``, as in :meth:`setup_anndata`.
        modalities
            Maps argument names to modalities; ``"rna_layer"`` is required, e.g.
            ``{"rna_layer": "rna"}``.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields` (used by ``load``).

        Examples
        --------
        >>> import gexbert_sc, mudata
        >>> mdata = mudata.MuData({"rna": gexbert_sc.datasets.pbmc68k()})
        >>> gexbert_sc.GexBERT.setup_mudata(mdata, modalities={"rna_layer": "rna"})
        >>> model = gexbert_sc.GexBERT(mdata, d_model=32)
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        if not modalities or "rna_layer" not in modalities:
            msg = (
                "`modalities` must name the expression modality, e.g. "
                f"`modalities={{'rna_layer': 'rna'}}`; got {modalities!r}."
            )
            raise ValueError(msg)
        modalities = cls._create_modalities_attr_dict(modalities, setup_method_args)
        rna = expression_data(mdata, setup_method_args["setup_args"])
        if rna.n_obs != mdata.n_obs:
            msg = (
                f"The expression modality {modalities.rna_layer!r} has {rna.n_obs} of the "
                f"MuData's {mdata.n_obs} samples; every sample must have expression values "
                "(mark unmeasured genes as NaN instead)."
            )
            raise ValueError(msg)

        def obs_of(argument: str) -> AnnData | MuData:
            name = modalities[argument]
            return mdata if name is None else mdata.mod[name]

        scale = check_expression_setup(rna, rna_layer, missing_layer, input_scale)
        check_obs_key(obs_of("batch_key"), batch_key, "batch_key")
        check_obs_key(obs_of("labels_key"), labels_key, "labels_key")
        fields = [
            MuDataLayerField(
                REGISTRY_KEYS.X_KEY,
                rna_layer,
                mod_key=modalities.rna_layer,
                is_count_data=False,
                mod_required=True,
            ),
            MuDataCategoricalObsField(
                REGISTRY_KEYS.BATCH_KEY, batch_key, mod_key=modalities.batch_key
            ),
            MuDataCategoricalObsField(
                REGISTRY_KEYS.LABELS_KEY, labels_key, mod_key=modalities.labels_key
            ),
        ]
        if missing_layer is not None:
            fields.append(
                MuDataLayerField(
                    REGISTRY_KEYS.MISSING_KEY,
                    missing_layer,
                    mod_key=modalities.rna_layer,
                    is_count_data=False,
                    mod_required=True,
                )
            )
        cls._register(mdata, fields, setup_method_args, kwargs, scale)

    def _importance_target(
        self, target: str | None, adata: AnnData | MuData | None, rows: np.ndarray
    ) -> ImportanceTarget:
        """Explain the embedding shift (default) or the restoration error of ``rows``."""
        if check_target(target, ("embedding", "restoration"), "GexBERT") == "restoration":
            return RestorationError()
        centre = self.get_latent_representation(adata, rows).mean(0)
        return EmbeddingShift(torch.as_tensor(centre))
