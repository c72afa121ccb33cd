"""The scvi-tools fields an AnnData set-up registers, after checking its arguments."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scvi.data.fields import BaseAnnDataField, CategoricalObsField, LayerField

from gexbert_sc._constants import REGISTRY_KEYS
from gexbert_sc.data._validation import check_expression_setup, check_obs_key

if TYPE_CHECKING:
    from anndata import AnnData

    from gexbert_sc.data._input_scale import InputScale, ScaleDecision


def anndata_fields(
    adata: AnnData,
    *,
    layer: str | None,
    batch_key: str | None,
    labels_key: str | None,
    missing_layer: str | None,
    input_scale: InputScale,
    labels_field: BaseAnnDataField | None = None,
) -> tuple[list[BaseAnnDataField], ScaleDecision]:
    """Check an AnnData set-up's arguments and return the fields to register.

    Parameters
    ----------
    adata
        The AnnData to set up.
    layer, batch_key, labels_key, missing_layer, input_scale
        The set-up arguments of the same names (see :meth:`gexbert_sc.GexBERT.setup_anndata`).
    labels_field
        The labels field (default: a categorical field of ``labels_key``); a classifier
        passes one that knows its unlabelled category.

    Returns
    -------
    The expression layer, batch, labels and (with ``missing_layer``) missing-mask fields, and
    the scale decided for the values (:func:`~gexbert_sc.data._input_scale.decide_input_scale`).

    Raises
    ------
    KeyError, ValueError, TypeError
        Naming the argument, before anything is registered.
    """
    scale = check_expression_setup(adata, layer, missing_layer, input_scale)
    check_obs_key(adata, batch_key, "batch_key")
    check_obs_key(adata, labels_key, "labels_key")
    if labels_field is None:
        labels_field = CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key)
    fields = [
        LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
        CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
        labels_field,
    ]
    if missing_layer is not None:
        fields.append(LayerField(REGISTRY_KEYS.MISSING_KEY, missing_layer, is_count_data=False))
    return fields, scale
