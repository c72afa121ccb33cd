"""How well an embedding separates known labels."""

from __future__ import annotations

from numbers import Integral
from typing import TYPE_CHECKING

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

if TYPE_CHECKING:
    import numpy.typing as npt


def knn_label_accuracy(
    embedding: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    n_neighbors: int = 15,
    n_splits: int = 5,
    random_state: int = 0,
) -> float:
    """Cross-validated accuracy of a k-nearest-neighbour classifier on an embedding.

    Parameters
    ----------
    embedding
        ``(n_samples, n_dims)`` coordinates, e.g. ``adata.obsm["X_gexbert"]``.
    labels
        ``(n_samples,)`` known labels, e.g. ``adata.obs["cell_type"]``.
    n_neighbors
        Neighbours voting for each held-out sample.
    n_splits
        Stratified folds.
    random_state
        Seed of the fold assignment.

    Returns
    -------
    Mean held-out accuracy over the folds.

    Examples
    --------
    >>> import numpy as np
    >>> from gexbert_sc.metrics import knn_label_accuracy
    >>> x = np.r_[np.zeros((20, 2)), np.ones((20, 2))]
    >>> knn_label_accuracy(x, ["a"] * 20 + ["b"] * 20, n_neighbors=3)
    1.0
    """
    embedding = np.asarray(embedding, dtype=np.float64)
    labels = np.asarray(labels)
    _check_embedding(embedding, labels, "embedding", "labels")
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    classifier = KNeighborsClassifier(n_neighbors=n_neighbors)
    return float(cross_val_score(classifier, embedding, labels, cv=folds).mean())


def knn_transfer_accuracy(
    reference: npt.ArrayLike,
    reference_labels: npt.ArrayLike,
    query: npt.ArrayLike,
    query_labels: npt.ArrayLike,
    *,
    n_neighbors: int = 15,
) -> float:
    """Accuracy of labels transferred from a reference to a query by nearest neighbours.

    A k-nearest-neighbour classifier is fitted on the reference samples' embedding and
    predicts the label of each query sample, e.g. training cells labelling held-out cells.

    Parameters
    ----------
    reference
        ``(n_reference, n_dims)`` coordinates of the labelled samples.
    reference_labels
        ``(n_reference,)`` their labels.
    query
        ``(n_query, n_dims)`` coordinates of the samples to label, in the same embedding.
    query_labels
        ``(n_query,)`` their true labels, to score the predictions.
    n_neighbors
        Reference neighbours voting for each query sample (at most ``n_reference``).

    Returns
    -------
    Fraction of query samples whose predicted label is their true label.

    Examples
    --------
    >>> import numpy as np
    >>> from gexbert_sc.metrics import knn_transfer_accuracy
    >>> reference = np.r_[np.zeros((5, 2)), np.ones((5, 2))]
    >>> query = np.array([[0.1, 0.0], [0.9, 1.0], [1.0, 0.8]])
    >>> knn_transfer_accuracy(
    ...     reference, ["a"] * 5 + ["b"] * 5, query, ["a", "b", "a"], n_neighbors=3
    ... )
    0.6666666666666666
    """
    reference, query = np.asarray(reference), np.asarray(query)
    reference_labels, query_labels = np.asarray(reference_labels), np.asarray(query_labels)
    _check_embedding(reference, reference_labels, "reference", "reference_labels")
    _check_embedding(query, query_labels, "query", "query_labels")
    if query.shape[1] != reference.shape[1]:
        msg = (
            f"`query` has {query.shape[1]} dimensions but `reference` has "
            f"{reference.shape[1]}: both must be coordinates in the same embedding."
        )
        raise ValueError(msg)
    n_reference = reference.shape[0]
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, Integral):
        msg = f"`n_neighbors` must be an integer: got {n_neighbors!r}."
        raise TypeError(msg)
    if not 1 <= n_neighbors <= n_reference:
        msg = (
            f"`n_neighbors` must be between 1 and the {n_reference} reference samples: "
            f"got {n_neighbors}."
        )
        raise ValueError(msg)
    classifier = KNeighborsClassifier(n_neighbors=n_neighbors).fit(reference, reference_labels)
    return float(classifier.score(query, query_labels))


def _check_embedding(embedding: np.ndarray, labels: np.ndarray, name: str, labels_name: str):
    """Refuse an embedding that is not finite numbers, 2-D, with one row per label."""
    if not np.issubdtype(embedding.dtype, np.number):
        msg = f"`{name}` must hold numbers: got dtype {embedding.dtype}."
        raise TypeError(msg)
    if embedding.ndim != 2 or embedding.shape[0] != labels.shape[0] or not len(labels):
        msg = (
            f"`{name}` must be 2-D with one row per entry of `{labels_name}`: got shape "
            f"{embedding.shape} for {labels.shape[0]} labels."
        )
        raise ValueError(msg)
    if not np.isfinite(embedding).all():
        n_bad = int((~np.isfinite(embedding)).any(axis=1).sum())
        msg = (
            f"`{name}` holds NaN or infinite values in {n_bad} of {embedding.shape[0]} rows: "
            "expected finite coordinates for every sample."
        )
        raise ValueError(msg)
