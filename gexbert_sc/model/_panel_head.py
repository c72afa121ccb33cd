"""Panel-adapted prediction: a head refitted on the reference read through a query's panel."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

if TYPE_CHECKING:
    import numpy.typing as npt

#: ``panel_adapted="auto"`` adapts to at most this many distinct panels in one query.
MAX_ADAPTED_PANELS = 16
#: Labelled reference samples read through a panel to refit the head (a random subset beyond).
MAX_REFERENCE_SAMPLES = 10_000


def group_by_panel(
    observed: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """Group samples by the set of genes they have.

    Parameters
    ----------
    observed
        ``(n_samples, n_genes)`` boolean mask of the genes each sample has.

    Returns
    -------
    ``(panels, group)``: the ``(n_panels, n_genes)`` distinct gene sets and, per sample, the
    row of ``panels`` it has.
    """
    packed = np.packbits(observed, axis=1)
    unique, group = np.unique(packed, axis=0, return_inverse=True)
    panels = np.unpackbits(unique, axis=1, count=observed.shape[1]).astype(bool)
    return panels, group.ravel()


def panel_features(
    z: npt.NDArray[np.float32], values: npt.NDArray[np.float32], panel: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float64]:
    """Features of the panel-adapted head: the embedding beside the panel's values.

    Parameters
    ----------
    z
        ``(n, d_model)`` ``[CLS]`` embeddings read through the panel.
    values
        ``(n, n_genes)`` values on the model's log scale, NaN where missing.
    panel
        Boolean mask of the panel's genes.

    Returns
    -------
    ``(n, d_model + panel size)`` features.
    """
    return np.hstack([z, values[:, panel]]).astype(np.float64)


def fit_panel_head(
    features: npt.NDArray[np.float64], labels: npt.NDArray[np.int64], class_weight: str | None
) -> Pipeline:
    """Fit the panel-adapted head: standardised L2 logistic regression (``C=1``).

    Values a reference sample lacks are filled with the gene's mean first.

    Parameters
    ----------
    features
        :func:`panel_features` of the labelled reference samples.
    labels
        Their class codes.
    class_weight
        ``"balanced"`` or ``None``, as the classifier's.

    Returns
    -------
    The fitted scikit-learn pipeline (``predict_proba`` over ``classes_``, the codes seen).
    """
    head = LogisticRegression(max_iter=1000, class_weight=class_weight)
    return make_pipeline(SimpleImputer(keep_empty_features=True), StandardScaler(), head).fit(
        features, labels
    )
