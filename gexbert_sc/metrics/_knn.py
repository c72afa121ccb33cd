"""How well an embedding separates known labels."""

from __future__ import annotations

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
    if embedding.ndim != 2 or embedding.shape[0] != labels.shape[0]:
        msg = (
            f"`embedding` must be 2-D with one row per label: got shape {embedding.shape} "
            f"for {labels.shape[0]} labels."
        )
        raise ValueError(msg)
    if not np.isfinite(embedding).all():
        msg = "`embedding` holds NaN or infinite values."
        raise ValueError(msg)
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    classifier = KNeighborsClassifier(n_neighbors=n_neighbors)
    return float(cross_val_score(classifier, embedding, labels, cv=folds).mean())
