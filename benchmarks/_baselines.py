"""Classical methods the benchmarks compare GexBERT with (benchmark code, not package features).

Imputers and embeddings first, then classifiers (each fitted on training values and labels,
with a ``predict(x)``), then the penalised Cox model of the survival benchmark, then the
spatial-panel peers (a reference of single cells, a spatial data set measured on some of its
genes: predict other genes at every spot). Every imputer takes ``(n_samples, n_genes)``
values with NaN at the entries to fill and returns a filled copy; the benchmarks pass the
training samples in full and what remains of the test samples, and score the test rows.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.decomposition import PCA
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, KNNImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.extmath import randomized_svd


def per_gene_mean(y: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Fill each gene's missing entries with its mean over the observed entries of ``reference``.

    ``reference`` defaults to ``y`` itself; pass the training samples to fill test samples
    with the training means.
    """
    means = np.nanmean(y if reference is None else reference, axis=0)
    return np.where(np.isnan(y), means, y)


def knn_impute(y: np.ndarray) -> np.ndarray:
    """``KNNImputer`` (k=10, uniform weights)."""
    return KNNImputer(n_neighbors=10).fit_transform(y)


def iterative_impute(y: np.ndarray) -> np.ndarray:
    """``IterativeImputer``: BayesianRidge on the 20 most correlated genes, 3 rounds.

    Fills are clipped to each gene's observed range: unclipped, the regressions diverged on
    gse3143's panel case (RMSE 22 in a smoke run).
    """
    imputer = IterativeImputer(
        max_iter=3,
        n_nearest_features=min(20, y.shape[1] - 1),
        min_value=np.nanmin(y, axis=0),
        max_value=np.nanmax(y, axis=0),
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Early stopping criterion not reached.*")
        return imputer.fit_transform(y)


def soft_impute(
    y: np.ndarray, max_rank: int = 100, max_iter: int = 100, tol: float = 1e-3
) -> np.ndarray:
    """SoftImpute: iterate ``Z <- S_lambda(observed + Z on missing)`` with a truncated SVD.

    Our numpy implementation of Mazumder, Hastie & Tibshirani (2010) with fancyimpute's
    defaults. ``S_lambda`` soft-thresholds the singular values of a rank-``max_rank`` SVD;
    genes are centred on their observed means and the missing entries start at 0. ``lambda``
    is the largest singular value of the start / 50 and the loop stops when the relative change
    of the filled entries falls below ``tol``. The SVD of each step is one block power
    iteration warm-started from the previous step's right singular vectors (exact SVDs of a
    3,000 × 2,000 matrix at every step would not fit the time budget); the subspace converges
    together with the filled entries.
    """
    missing = np.isnan(y)
    means = np.nanmean(y, axis=0)
    filled = np.where(missing, 0.0, y - means)
    _, top, vt = randomized_svd(filled, min(max_rank, min(y.shape) - 1), random_state=0)
    shrink = top[0] / 50
    for _ in range(max_iter):
        q, _ = np.linalg.qr(filled @ vt.T)
        u, s, vt = np.linalg.svd(q.T @ filled, full_matrices=False)
        low_rank = (q @ u * np.maximum(s - shrink, 0.0)) @ vt
        previous = filled[missing]
        change = np.linalg.norm(low_rank[missing] - previous) / max(np.linalg.norm(previous), 1e-12)
        filled[missing] = low_rank[missing]
        if change < tol:
            break
    return filled + means


def magic_impute(y: np.ndarray) -> np.ndarray:
    """MAGIC diffusion (defaults: knn=5, t=3) from gene-mean-filled input."""
    import magic

    smoothed = magic.MAGIC(random_state=0, verbose=0).fit_transform(per_gene_mean(y))
    return np.where(np.isnan(y), smoothed, y)


def magic_available() -> bool:
    """Whether ``magic`` (magic-impute) imports."""
    try:
        import magic  # noqa: F401
    except ImportError:
        return False
    return True


def pca50(x: np.ndarray) -> PCA:
    """The PCA-50 embedding baseline, fitted on ``x`` (``random_state=0``)."""
    return PCA(n_components=50, random_state=0).fit(x)


# ---------------------------------------------------------------------- classifiers
def logistic_regression(train: np.ndarray, labels: np.ndarray) -> Pipeline:
    """Standardised logistic regression (L2, ``C=1``, balanced classes), fitted on ``train``."""
    model = LogisticRegression(max_iter=2000, class_weight="balanced")
    return make_pipeline(StandardScaler(), model).fit(train, labels)


def knn_classifier(train: np.ndarray, labels: np.ndarray) -> Pipeline:
    """Standardised k=15 nearest-neighbour classifier, fitted on ``train``."""
    return make_pipeline(StandardScaler(), KNeighborsClassifier(15)).fit(train, labels)


def pca_logistic_regression(train: np.ndarray, labels: np.ndarray) -> Pipeline:
    """PCA (50 components, fewer for small panels) then logistic regression."""
    n_components = min(50, train.shape[1] - 1, train.shape[0] - 1)
    model = LogisticRegression(max_iter=2000, class_weight="balanced")
    pca = PCA(n_components=max(n_components, 1), random_state=0)
    return make_pipeline(StandardScaler(), pca, model).fit(train, labels)


def celltypist_classifier(train: np.ndarray, labels: np.ndarray, genes: list[str]):
    """A CellTypist model trained on ``train`` (log1p values; no feature selection).

    The returned object has ``predict(x)`` like the scikit-learn pipelines. CellTypist's
    expression check (log1p of counts per 10,000 over the whole transcriptome) does not hold
    for a panel, so it is turned off. CellTypist 1.7.1's default solver passes
    ``multi_class`` to scikit-learn's ``LogisticRegression``, which scikit-learn 1.8 removed,
    so its SGD logistic regression (``use_SGD=True``, its mode for large references) is used.
    """
    import celltypist

    model = celltypist.train(
        train,
        labels=labels,
        genes=genes,
        check_expression=False,
        use_SGD=True,
        n_jobs=1,
        max_iter=1000,
    )
    return _CellTypistPredictor(model, genes)


class _CellTypistPredictor:
    def __init__(self, model, genes: list[str]):
        self.model = model
        # CellTypist drops genes never expressed in training: read the genes it kept
        self.columns = [list(genes).index(g) for g in model.features]

    def predict(self, x: np.ndarray) -> np.ndarray:
        # as celltypist.annotate does: the model's scaler, values clipped at 10
        scaled = np.minimum(self.model.scaler.transform(x[:, self.columns]), 10.0)
        _, _, labels = self.model.predict_labels_and_prob(scaled)
        return np.asarray(labels)


def celltypist_available() -> bool:
    """Whether ``celltypist`` imports."""
    try:
        import celltypist  # noqa: F401
    except ImportError:
        return False
    return True


class ElasticNetCox:
    """Elastic-net penalised Cox model (scikit-survival's Coxnet), penalty chosen by inner CV.

    Features are standardised on the training samples; the penalty path (``l1_ratio`` 0.5)
    is fitted once, and its strength is the one with the best mean concordance over an
    inner stratified 3-fold split of the training samples. ``predict(x)`` gives risk scores
    (higher: earlier event). scikit-survival is GPL-3: it is a benchmark extra only.
    """

    def __init__(self, l1_ratio: float = 0.5, n_alphas: int = 30, inner_folds: int = 3):
        self.l1_ratio, self.n_alphas, self.inner_folds = l1_ratio, n_alphas, inner_folds

    def fit(self, x: np.ndarray, time: np.ndarray, event: np.ndarray) -> ElasticNetCox:
        """Fit on training features ``x`` with follow-up ``time`` and bool ``event``."""
        from sklearn.model_selection import StratifiedKFold
        from sksurv.linear_model import CoxnetSurvivalAnalysis
        from sksurv.util import Surv

        from gexbert_sc.metrics import concordance_index

        self.scaler = StandardScaler().fit(x)
        z = self.scaler.transform(x)
        y = Surv.from_arrays(event.astype(bool), time)
        settings = {"l1_ratio": self.l1_ratio, "alpha_min_ratio": 0.05}
        self.path = CoxnetSurvivalAnalysis(n_alphas=self.n_alphas, **settings).fit(z, y)
        alphas = self.path.alphas_
        scores = np.zeros(len(alphas))
        inner = StratifiedKFold(self.inner_folds, shuffle=True, random_state=0)
        for fit_rows, score_rows in inner.split(z, event):
            model = CoxnetSurvivalAnalysis(alphas=alphas, **settings).fit(z[fit_rows], y[fit_rows])
            for k, alpha in enumerate(alphas):
                risk = model.predict(z[score_rows], alpha=alpha)
                scores[k] += concordance_index(time[score_rows], risk, event[score_rows])
        self.alpha = alphas[int(np.argmax(scores))]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Risk scores of the samples ``x``."""
        return self.path.predict(self.scaler.transform(x), alpha=self.alpha)


# ---------------------------------------------------------------------- spatial panels
def reference_knn(
    reference: np.ndarray, query: np.ndarray, targets: np.ndarray, n_neighbors: int = 10
) -> np.ndarray:
    """Each query spot's mean of ``targets`` over its nearest reference cells.

    Parameters
    ----------
    reference
        ``(n_cells, n_shared)`` reference values of the genes both data sets measured.
    query
        ``(n_spots, n_shared)`` spatial values of the same genes, on the reference's scale
        (e.g. quantile-matched).
    targets
        ``(n_cells, n_targets)`` reference values of the genes to predict.
    n_neighbors
        Reference cells averaged (Euclidean distance on the shared genes).
    """
    _, idx = NearestNeighbors(n_neighbors=n_neighbors).fit(reference).kneighbors(query)
    return targets[idx].mean(axis=1)


def tangram_predict(reference, spatial, train_genes: list[str], test_genes: list[str], seed: int):
    """Tangram 1.0.4 (cells mode, its defaults: 1,000 epochs, RNA-count density prior), CPU.

    The reference cells are mapped onto the spots on ``train_genes``; the mapping projects
    every reference gene, and ``test_genes`` are returned ``(n_spots, n_test)``.
    """
    import tangram as tg

    # Tangram lowercases gene names, then makes them unique: a reference gene differing from
    # a panel gene only in case ("d" beside "D") would take the panel gene's name. Keep the
    # exact-case gene only.
    wanted = {g.lower(): g for g in [*train_genes, *test_genes]}
    clash = [g for g in reference.var_names if wanted.get(g.lower(), g) != g]
    cells = reference[:, ~reference.var_names.isin(clash)].copy()
    spots = spatial[:, train_genes].copy()
    tg.pp_adatas(cells, spots, genes=list(train_genes))
    mapping = tg.map_cells_to_space(
        cells, spots, mode="cells", device="cpu", random_state=seed, verbose=False
    )
    projected = tg.project_genes(mapping, cells)
    values = projected[:, [g.lower() for g in test_genes]].X
    return np.asarray(values.toarray() if hasattr(values, "toarray") else values)


def gimvi_predict(
    reference, spatial, train_genes: list[str], test_genes: list[str], seed: int
) -> np.ndarray:
    """gimVI (``scvi.external.GIMVI``, its defaults: ZINB / NB, 200 epochs), CPU.

    Trained on the reference (every gene it is given) and the spots' ``train_genes``;
    returns its imputation of ``test_genes`` at the spots
    (``get_imputed_values(normalized=False)``).
    """
    import scvi
    from scvi.external import GIMVI

    scvi.settings.seed = seed
    cells = reference.copy()
    spots = spatial[:, train_genes].copy()
    GIMVI.setup_anndata(cells)
    GIMVI.setup_anndata(spots)
    model = GIMVI(cells, spots)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-negative integer.*")
        model.train(enable_progress_bar=False)
    _, imputed = model.get_imputed_values(normalized=False)
    return np.asarray(imputed)[:, cells.var_names.get_indexer(test_genes)]


def tangram_available() -> bool:
    """Whether ``tangram`` (tangram-sc) imports."""
    try:
        import tangram  # noqa: F401
    except ImportError:
        return False
    return True
