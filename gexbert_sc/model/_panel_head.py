"""Panel-adapted prediction: a head refitted on the reference read through a query's panel."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

if TYPE_CHECKING:
    import numpy.typing as npt

#: ``panel_adapted="auto"`` adapts to at most this many distinct panels in one query.
MAX_ADAPTED_PANELS = 16
#: Labelled reference samples read through a panel to refit the head (a random subset beyond).
MAX_REFERENCE_SAMPLES = 10_000
#: Reference samples on which the head's feature set is chosen (a random subset beyond).
MAX_SELECTION_SAMPLES = 3_000


class PanelHead(NamedTuple):
    """A head fitted for one panel, and whether it reads the embedding beside the panel."""

    #: The fitted scikit-learn pipeline (``predict_proba`` over ``classes_``, the codes seen).
    pipeline: Pipeline
    #: Whether the features hold the ``[CLS]`` embedding (else the panel's values only).
    with_embedding: bool


def panel_features(
    z: npt.NDArray[np.float32], values: npt.NDArray[np.float32], with_embedding: bool
) -> npt.NDArray[np.float64]:
    """Build the panel-adapted head's features: the panel's values, with the embedding or not.

    Parameters
    ----------
    z
        ``(n, d_model)`` ``[CLS]`` embeddings read through the panel.
    values
        ``(n, panel size)`` values of the panel's genes on the model's log scale, NaN where
        missing.
    with_embedding
        Put the embedding beside the panel's values.

    Returns
    -------
    ``(n, panel size)`` or ``(n, d_model + panel size)`` features.
    """
    return np.hstack([z, values] if with_embedding else [values]).astype(np.float64)


def _logistic_regression(class_weight: str | None) -> Pipeline:
    """Standardised L2 logistic regression (``C=1``), missing values filled with the mean."""
    head = LogisticRegression(max_iter=1000, class_weight=class_weight)
    return make_pipeline(SimpleImputer(keep_empty_features=True), StandardScaler(), head)


def fit_panel_head(
    z: npt.NDArray[np.float32],
    values: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    class_weight: str | None,
    seed: int,
) -> PanelHead:
    """Fit the panel-adapted head on reference samples read through ``panel``.

    Two feature sets are compared by 3-fold cross-validated accuracy on the reference (at
    most ``MAX_SELECTION_SAMPLES`` of them): the panel's values alone (a logistic regression
    retrained on the panel) and the ``[CLS]`` embedding beside them; the better one (the
    panel alone on a tie) is refitted on every reference sample. So the head is, by the
    reference's own estimate, never below the logistic regression on the panel. With a
    class of fewer than 3 samples there, the panel's values alone are used.

    Parameters
    ----------
    z, values
        The labelled reference samples read through the panel (:func:`panel_features`).
    labels
        Their class codes.
    class_weight
        ``"balanced"`` or ``None``, as the classifier's.
    seed
        Seed of the cross-validation folds and subset.

    Returns
    -------
    The fitted :class:`PanelHead`.
    """
    rng = np.random.default_rng(seed)
    subset = np.arange(len(labels))
    if len(subset) > MAX_SELECTION_SAMPLES:
        subset = np.sort(rng.choice(subset, MAX_SELECTION_SAMPLES, replace=False))
    if np.unique(labels[subset], return_counts=True)[1].min() < 3:
        # a class too small for 3 folds: no comparison, the panel's values alone
        return PanelHead(_logistic_regression(class_weight).fit(values, labels), False)
    folds = StratifiedKFold(3, shuffle=True, random_state=seed)
    scores = {}
    for with_embedding in (False, True):
        features = panel_features(z[subset], values[subset], with_embedding)
        scores[with_embedding] = cross_val_score(
            _logistic_regression(class_weight), features, labels[subset], cv=folds
        ).mean()
    with_embedding = bool(scores[True] > scores[False])
    pipeline = _logistic_regression(class_weight).fit(
        panel_features(z, values, with_embedding), labels
    )
    return PanelHead(pipeline, with_embedding)
