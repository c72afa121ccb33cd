import re

import numpy as np
import pandas as pd
import pytest

from gexbert_sc.metrics import knn_label_accuracy, knn_transfer_accuracy


@pytest.fixture
def clusters():
    """Two well separated 2-D clusters of 20 samples each, labelled a and b."""
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 0.1, (20, 2)), rng.normal(5, 0.1, (20, 2))]
    return x, np.array(["a"] * 20 + ["b"] * 20)


def test_transfer_known_value(clusters):
    """Query points near the a cluster are labelled a: accuracy counts the true labels."""
    reference, labels = clusters
    query = np.array([[0.0, 0.0], [5.0, 5.0], [5.0, 4.9], [0.1, 0.0]])
    truth = np.array(["a", "b", "a", "b"])
    assert knn_transfer_accuracy(reference, labels, query, truth, n_neighbors=5) == 0.5


def test_transfer_matches_a_fitted_classifier():
    """Same answer as fitting scikit-learn's classifier by hand on noisy labels."""
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(1)
    reference, query = rng.normal(size=(60, 3)), rng.normal(size=(30, 3))
    ref_labels, query_labels = rng.integers(0, 3, 60), rng.integers(0, 3, 30)
    expected = KNeighborsClassifier(15).fit(reference, ref_labels).score(query, query_labels)
    assert knn_transfer_accuracy(reference, ref_labels, query, query_labels) == expected


def test_transfer_takes_pandas_labels(clusters):
    reference, labels = clusters
    score = knn_transfer_accuracy(reference, pd.Series(labels), reference, pd.Categorical(labels))
    assert score == 1.0


def test_transfer_refuses_bad_inputs(clusters):
    reference, labels = clusters
    with pytest.raises(
        ValueError,
        match=re.escape("`query` must be 2-D with one row per entry of `query_labels`: got"),
    ):
        knn_transfer_accuracy(reference, labels, reference, labels[:5])
    with pytest.raises(ValueError, match="`reference` must be 2-D .* got shape \\(40,\\)"):
        knn_transfer_accuracy(reference[:, 0], labels, reference, labels)
    with pytest.raises(ValueError, match="`query` has 1 dimensions but `reference` has 2"):
        knn_transfer_accuracy(reference, labels, reference[:, :1], labels)
    bad = reference.copy()
    bad[[1, 3], 0] = np.nan
    with pytest.raises(ValueError, match="`query` holds NaN or infinite values in 2 of 40 rows"):
        knn_transfer_accuracy(reference, labels, bad, labels)
    with pytest.raises(ValueError, match="between 1 and the 40 reference samples: got 41"):
        knn_transfer_accuracy(reference, labels, reference, labels, n_neighbors=41)
    with pytest.raises(TypeError, match="`n_neighbors` must be an integer: got 2.5"):
        knn_transfer_accuracy(reference, labels, reference, labels, n_neighbors=2.5)
    with pytest.raises(TypeError, match="`reference` must hold numbers"):
        knn_transfer_accuracy(labels[:, None], labels, reference, labels)


def test_label_accuracy_separates_clusters(clusters):
    x, labels = clusters
    assert knn_label_accuracy(x, labels, n_neighbors=3) == 1.0
    shuffled = np.random.default_rng(0).permutation(labels)
    assert knn_label_accuracy(x, shuffled, n_neighbors=3) < 0.8


def test_label_accuracy_refuses_nan(clusters):
    x, labels = clusters
    x = x.copy()
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="`embedding` holds NaN or infinite values in 1 of 40"):
        knn_label_accuracy(x, labels)
