"""The catalogue of bad input (docs/refusals.md): each try is refused with a clear error
that names the argument, what was found and what was expected, and leaves the user's
AnnData unchanged. Inputs that are valid, though unusual, are handled: see the end."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata.tests.helpers import assert_equal
from helpers import TINY_MODEL, assert_fp32_path_close, make_counts_adata, make_survival_adata

from gexbert_sc import GexBERT, GexBERTClassifier, GexBERTSurvival, data
from gexbert_sc.__main__ import main

ONE_EPOCH = {"max_epochs": 1, "batch_size": 32, "enable_progress_bar": False}


def fresh() -> ad.AnnData:
    """A small counts AnnData, new at every call."""
    return make_counts_adata(n_obs=60, n_vars=20)


def changed(mutation):
    """Return a builder of a fresh AnnData changed by ``mutation``."""

    def build() -> ad.AnnData:
        adata = fresh()
        mutation(adata)
        return adata

    return build


def survival_cohort() -> ad.AnnData:
    """Small log-scale profiles with follow-up times and events, new at every call."""
    return make_survival_adata(n_obs=60, n_vars=20)


def log_scaled(adata: ad.AnnData) -> ad.AnnData:
    adata.X = np.log1p(adata.X / adata.X.sum(1, keepdims=True) * 1e4)
    return adata


def trained(adata: ad.AnnData, **setup) -> GexBERT:
    GexBERT.setup_anndata(adata, **setup)
    model = GexBERT(adata, **TINY_MODEL)
    model.train(**ONE_EPOCH)
    return model


@pytest.fixture(scope="module")
def counts_model() -> GexBERT:
    """A one-epoch model on counts, with batches (shared, do not mutate)."""
    return trained(fresh(), batch_key="batch")


@pytest.fixture(scope="module")
def log_model() -> GexBERT:
    """A one-epoch model on log-normalised values (shared, do not mutate)."""
    return trained(log_scaled(fresh()))


def with_value(value: float, *, row: int = 0, col: int = 0, fmt: str = "dense", layer=None):
    """Return a mutation writing ``value`` at ``(row, col)`` of X (or a layer) in ``fmt``."""

    def mutate(adata: ad.AnnData) -> None:
        matrix = adata.X.copy()
        matrix[row, col] = value
        matrix = sp.csr_matrix(matrix) if fmt == "csr" else matrix
        if layer is None:
            adata.X = matrix
        else:
            adata.layers[layer] = matrix

    return mutate


def setting(attribute: str, value_of):
    """Return a mutation setting ``adata.<attribute> = value_of(adata)``."""
    return lambda adata: setattr(adata, attribute, value_of(adata))


def duplicate_first(names: str):
    def mutate(adata: ad.AnnData) -> None:
        index = list(getattr(adata, names))
        index[1] = index[0]
        setattr(adata, names, index)

    return mutate


def setup(**kwargs):
    return lambda adata, models: GexBERT.setup_anndata(adata, **kwargs)


# (id, builder of the AnnData, the call, error, message pattern)
SETUP_TRIES = [
    (
        "inf-dense-X",
        changed(with_value(np.inf)),
        setup(),
        ValueError,
        r"`adata.X` holds 1 infinite",
    ),
    (
        "-inf-dense-X",
        changed(with_value(-np.inf)),
        setup(),
        ValueError,
        r"sample 'cell_0', gene 'gene_0'",
    ),
    (
        "inf-sparse-X",
        changed(with_value(np.inf, fmt="csr")),
        setup(),
        ValueError,
        "1 infinite values",
    ),
    (
        "inf-layer",
        changed(with_value(np.inf, row=2, col=3, layer="counts")),
        setup(layer="counts"),
        ValueError,
        r"`adata.layers\['counts'\]` holds 1 infinite.*'cell_2', gene 'gene_3'",
    ),
    (
        "nan-and-inf-sparse-layer",
        changed(
            lambda a: (
                with_value(np.nan, layer="c", fmt="csr")(a),
                a.layers["c"].__setitem__((5, 5), -np.inf),
            )
        ),
        setup(layer="c"),
        ValueError,
        "1 infinite values",
    ),
    (
        "negative-declared-counts",
        changed(with_value(-3)),
        setup(input_scale="counts"),
        ValueError,
        r"`input_scale='counts'` but the data hold negative values \(min -3\)",
    ),
    (
        "fractional-declared-counts",
        changed(with_value(0.5)),
        setup(input_scale="counts"),
        ValueError,
        r"values that are not integers \(e.g. 0.5\); counts must be whole numbers",
    ),
    (
        "fractional-declared-counts-sparse",
        changed(with_value(2.25, row=59, col=19, fmt="csr")),
        setup(input_scale="counts"),
        ValueError,
        r"not integers \(e.g. 2.25\)",
    ),
    (
        "all-missing",
        changed(setting("X", lambda a: np.full(a.shape, np.nan, dtype=np.float32))),
        setup(),
        ValueError,
        "holds no observed value: every entry is NaN",
    ),
    (
        "duplicated-var-names",
        changed(duplicate_first("var_names")),
        setup(),
        ValueError,
        r"1 duplicated gene names \(`adata.var_names`\), e.g. \['gene_0'\].*var_names_make_unique",
    ),
    (
        "duplicated-obs-names",
        changed(duplicate_first("obs_names")),
        setup(),
        ValueError,
        r"1 duplicated sample names .*\['cell_0'\].*obs_names_make_unique",
    ),
    ("no-samples", fresh, lambda a, m: GexBERT.setup_anndata(a[:0].copy()), ValueError, "empty"),
    ("no-genes", fresh, lambda a, m: GexBERT.setup_anndata(a[:, :0].copy()), ValueError, "empty"),
    (
        "string-X",
        changed(setting("X", lambda a: a.X.astype(str))),
        setup(),
        TypeError,
        "`adata.X` must be numeric, got dtype <U",
    ),
    (
        "object-X",
        changed(setting("X", lambda a: a.X.astype(object))),
        setup(),
        TypeError,
        r"must be numeric, got dtype object; convert it with `.astype\(float\)`",
    ),
    (
        "boolean-X",
        changed(setting("X", lambda a: a.X > 2)),
        setup(),
        TypeError,
        "`adata.X` is boolean: True/False is a mask, not expression",
    ),
    (
        "unknown-layer",
        fresh,
        setup(layer="raw"),
        KeyError,
        r"`layer='raw'` is not in `adata.layers`",
    ),
    (
        "unknown-batch-key",
        fresh,
        setup(batch_key="donor"),
        KeyError,
        r"`batch_key='donor'` is not a column of `adata.obs`; available: \['cell_type', 'batch'\]",
    ),
    ("unknown-labels-key", fresh, setup(labels_key="kind"), KeyError, "`labels_key='kind'`"),
    (
        "unknown-missing-layer",
        fresh,
        setup(missing_layer="mask"),
        KeyError,
        "`missing_layer='mask'` is not in `adata.layers`",
    ),
    (
        "mask-of-wrong-dtype",
        changed(lambda a: a.layers.__setitem__("mask", np.zeros(a.shape, dtype=np.int8))),
        setup(missing_layer="mask"),
        TypeError,
        r"`missing_layer='mask'` must be boolean \(True = missing\), got dtype int8",
    ),
    ("unknown-input-scale", fresh, setup(input_scale="tpm"), ValueError, "must be one of"),
    (
        "view",
        fresh,
        lambda a, m: GexBERT.setup_anndata(a[:30]),
        ValueError,
        r"`adata` is a view .*`adata = adata.copy\(\)`",
    ),
]


def set_up(mutation=None):
    """Return a builder of a fresh AnnData (changed by ``mutation``) set up for GexBERT."""

    def build() -> ad.AnnData:
        adata = fresh() if mutation is None else changed(mutation)()
        GexBERT.setup_anndata(adata)
        return adata

    return build


def constructed(**kwargs):
    return lambda adata, models: GexBERT(adata, **{**TINY_MODEL, **kwargs})


def trained_with(**kwargs):
    return lambda adata, models: GexBERT(adata, **TINY_MODEL).train(**{**ONE_EPOCH, **kwargs})


MODEL_TRIES = [
    (
        "all-missing-gene",
        set_up(lambda a: a.X.__setitem__((slice(None), 3), np.nan)),
        constructed(),
        ValueError,
        "1 of 20 genes have no observed value.*gene_3",
    ),
    ("mask-ratio-1", set_up(), constructed(mask_ratio=1.0), ValueError, r"`mask_ratio` must be in"),
    ("mask-ratio-negative", set_up(), constructed(mask_ratio=-0.1), ValueError, "`mask_ratio`"),
    (
        "dropout-1.5",
        set_up(),
        constructed(dropout=1.5),
        ValueError,
        r"`dropout` must be in \[0, 1\)",
    ),
    (
        "n-context-0",
        set_up(),
        constructed(n_context=0),
        ValueError,
        "`n_context` must be a positive",
    ),
    (
        "lr-0",
        set_up(),
        trained_with(lr=0),
        ValueError,
        "`lr` must be a positive finite number, got 0",
    ),
    (
        "lr-nan",
        set_up(),
        trained_with(lr=float("nan")),
        ValueError,
        "`lr` must be a positive finite",
    ),
    (
        "batch-size-0",
        set_up(),
        trained_with(batch_size=0),
        ValueError,
        "`batch_size` must be a pos",
    ),
    (
        "max-epochs-0",
        set_up(),
        trained_with(max_epochs=0),
        ValueError,
        "`max_epochs` must be a pos",
    ),
    ("max-epochs-float", set_up(), trained_with(max_epochs=1.5), ValueError, "got 1.5"),
    (
        "early-stopping-patience-0",
        set_up(),
        trained_with(early_stopping_patience=0),
        ValueError,
        "`early_stopping_patience` must be a positive integer, got 0",
    ),
    (
        "early-stopping-patience-float",
        set_up(),
        trained_with(early_stopping_patience=2.5),
        ValueError,
        "`early_stopping_patience` must be a positive integer, got 2.5",
    ),
    (
        "early-stopping-not-a-bool",
        set_up(),
        trained_with(early_stopping="yes"),
        TypeError,
        "`early_stopping` must be None, True or False, got 'yes'",
    ),
]


def with_labels(labels):
    """Return a builder of a fresh AnnData with ``obs["label"] = labels(adata)``."""
    return changed(lambda adata: adata.obs.__setitem__("label", labels(adata)))


def cohort_with(column: str, values):
    """Return a builder of a survival cohort whose ``obs[column]`` is ``values(adata)``."""

    def build() -> ad.AnnData:
        adata = survival_cohort()
        adata.obs[column] = values(adata)
        return adata

    return build


def classifier_on(adata, models):
    GexBERTClassifier.from_gexbert_model(models["counts"], labels_key="label", adata=adata)


def survival_on(adata, models):
    GexBERTSurvival.from_gexbert_model(models["log"], "time", "event", adata=adata)


TASK_TRIES = [
    (
        "labels-with-nan",
        with_labels(lambda a: pd.Categorical(["type_0", None] * (a.n_obs // 2))),
        classifier_on,
        ValueError,
        "missing",
    ),
    (
        "labels-of-one-class",
        with_labels(lambda a: pd.Categorical(["type_0"] * a.n_obs)),
        classifier_on,
        ValueError,
        r"has 1 labelled class \(\['type_0'\]\); a classifier needs at least 2",
    ),
    (
        "labels-key-absent",
        fresh,
        lambda a, m: GexBERTClassifier.from_gexbert_model(m["counts"], labels_key="x", adata=a),
        KeyError,
        "`labels_key='x'`",
    ),
    (
        "times-negative",
        cohort_with("time", lambda a: -a.obs["time"]),
        survival_on,
        ValueError,
        r"`adata.obs\['time'\]` \(`time_key`\) has \d+ negative times",
    ),
    (
        "times-nan",
        cohort_with("time", lambda a: a.obs["time"].where(a.obs["time"] > 0.5)),
        survival_on,
        ValueError,
        "missing or infinite times",
    ),
    (
        "times-non-numeric",
        cohort_with("time", lambda a: a.obs["time"].astype(str)),
        survival_on,
        TypeError,
        "must hold numeric follow-up times, got dtype object",
    ),
    (
        "events-not-0-1",
        cohort_with("event", lambda a: a.obs["event"] * 2),
        survival_on,
        ValueError,
        r"must be boolean or 0/1 \(1: event, 0: censored\); found \['0', '2'\]",
    ),
    (
        "no-events",
        cohort_with("event", lambda a: np.zeros(a.n_obs, dtype=int)),
        survival_on,
        ValueError,
        "has no event",
    ),
]


def embed(model_name: str, mutate_query=None):
    def call(adata, models):
        model = models[model_name]
        if mutate_query is not None:
            mutate_query(adata, model)
        model.get_latent_representation(adata)

    return call


def log_query(adata, model):
    log_scaled(adata)


QUERY_TRIES = [
    (
        "unseen-batch",
        changed(lambda a: a.obs.__setitem__("batch", pd.Categorical(["c"] * a.n_obs))),
        embed("counts"),
        ValueError,
        r"has batches the model was not trained on: \['c'\]; it knows \['a', 'b'\]",
    ),
    (
        "genes-missing",
        fresh,
        lambda a, m: m["counts"].get_latent_representation(a[:, :15].copy()),
        ValueError,
        r"shares 15 of the model's 20 genes.*align_genes",
    ),
    (
        "genes-reordered",
        fresh,
        lambda a, m: m["counts"].get_latent_representation(a[:, ::-1].copy()),
        ValueError,
        "holds the model's genes in another order",
    ),
    (
        "panel-shares-no-gene",
        changed(setting("var_names", lambda a: [f"other_{j}" for j in range(a.n_vars)])),
        lambda a, m: data.align_genes(a, m["counts"]),
        ValueError,
        "shares no gene with the model's 20 genes",
    ),
    (
        "log-values-into-counts-model",
        changed(lambda a: log_scaled(a)),
        embed("counts"),
        ValueError,
        "trained on counts, but `adata.X` holds values that are not integers.*log-normalised",
    ),
    (
        "counts-into-log-model",
        fresh,
        embed("log"),
        ValueError,
        "trained on log-normalised values, but `adata.X` holds integers up to .*raw counts",
    ),
    (
        "inf-in-query",
        changed(with_value(np.inf, row=4)),
        embed("counts"),
        ValueError,
        "`adata.X` holds 1 infinite values",
    ),
    (
        "unknown-genes-asked",
        fresh,
        lambda a, m: m["counts"].get_imputed_expression(a, genes=["gene_0", "CD3E"]),
        KeyError,
        r"1 genes unknown to the model \(e.g. \['CD3E'\]\)",
    ),
]

TRIES = SETUP_TRIES + MODEL_TRIES + TASK_TRIES + QUERY_TRIES


@pytest.mark.parametrize(
    ("build", "call", "error", "match"),
    [pytest.param(*rest, id=name) for name, *rest in TRIES],
)
def test_bad_input_is_refused_and_leaves_the_anndata_unchanged(
    counts_model, log_model, build, call, error, match
):
    adata = build()
    before = adata.copy()
    with pytest.raises(error, match=match):
        call(adata, {"counts": counts_model, "log": log_model})
    assert_equal(adata, before)


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, counts_model):
    """An input .h5ad, a saved model and an existing output, for the command-line tries."""
    root = tmp_path_factory.mktemp("cli")
    query = fresh()
    query.write_h5ad(root / "query.h5ad")
    (root / "query.csv").write_text("not an h5ad\n")
    query.write_h5ad(root / "existing.h5ad")
    counts_model.save(root / "model")
    return root


CLI_TRIES = [
    ("input-missing", ["embed", "{root}/absent.h5ad"], r"input '.*absent.h5ad' does not exist"),
    ("input-not-h5ad", ["embed", "{root}/query.csv"], r"is not an .h5ad file"),
    (
        "output-exists",
        ["embed", "{root}/query.h5ad", "--output", "{root}/existing.h5ad"],
        r"--output '.*existing.h5ad' exists; pass --overwrite",
    ),
    (
        "output-not-h5ad",
        ["embed", "{root}/query.h5ad", "--output", "{root}/out.csv"],
        "must end with .h5ad",
    ),
    (
        "model-dir-missing",
        ["embed", "{root}/query.h5ad", "--model-dir", "{root}/absent_model"],
        "is not a directory written by `gexbert-sc train`",
    ),
    (
        "train-model-dir-exists",
        ["train", "{root}/query.h5ad", "--model-dir", "{root}/model"],
        r"--model-dir '.*model' exists; pass --overwrite",
    ),
]


@pytest.mark.parametrize(("argv", "match"), [pytest.param(*t, id=n) for n, *t in CLI_TRIES])
def test_command_line_refuses_bad_paths_before_any_work(cli_files, capsys, argv, match):
    defaults = {"--model-dir": "{root}/model", "--output": "{root}/new.h5ad"}
    for option, value in defaults.items():
        if option not in argv and not (argv[0] == "train" and option == "--output"):
            argv = [*argv, option, value]
    argv = [arg.format(root=cli_files) for arg in argv]
    existing = (cli_files / "existing.h5ad").read_bytes()
    assert main(argv) == 2
    assert capsys.readouterr().err.count("error:") == 1
    assert (cli_files / "existing.h5ad").read_bytes() == existing
    assert not (cli_files / "new.h5ad").exists()


def test_overwrite_lets_the_command_line_replace_an_output(cli_files):
    target = cli_files / "replaced.h5ad"
    fresh().write_h5ad(target)
    args = ["embed", str(cli_files / "query.h5ad"), "--model-dir", str(cli_files / "model")]
    assert main([*args, "--output", str(target), "--overwrite"]) == 0
    assert "X_gexbert" in ad.read_h5ad(target).obsm


def test_the_catalogue_holds_at_least_40_tries():
    assert len(TRIES) + len(CLI_TRIES) >= 40
    names = [name for name, *_ in TRIES + CLI_TRIES]
    assert len(set(names)) == len(names)


# ----------------------------------------------------------------- refused by anndata itself
def test_anndata_refuses_coo_matrices_and_masks_of_the_wrong_shape():
    adata = fresh()
    with pytest.raises(ValueError, match="Only CSR and CSC matrices are supported"):
        adata.X = sp.coo_matrix(adata.X)
    with pytest.raises(ValueError, match="shape"):
        adata.layers["mask"] = np.zeros((adata.n_obs, adata.n_vars + 1), dtype=bool)


# ----------------------------------------------------------------- valid input, handled
def as_int64(adata):
    adata.X = adata.X.astype(np.int64)


def as_float16(adata):
    adata.X = adata.X.astype(np.float16)


def as_csr(adata):
    adata.X = sp.csr_matrix(adata.X)


def as_csc(adata):
    adata.X = sp.csc_matrix(adata.X)


@pytest.mark.parametrize("convert", [as_int64, as_float16, as_csr, as_csc])
def test_storage_types_read_like_dense_float32(counts_model, convert):
    # small counts are exact in every type: the embedding must not depend on the storage
    reference = fresh()
    reference.obs = counts_model.adata.obs[["batch"]].copy()
    query = reference.copy()
    convert(query)
    np.testing.assert_allclose(
        counts_model.get_latent_representation(query),
        counts_model.get_latent_representation(reference),
        atol=1e-5,  # float rounding: sums run in another order over a CSC matrix
    )


@pytest.mark.parametrize("convert", [as_int64, as_csc])
def test_training_on_other_storage_types_gives_the_same_model(convert):
    reference = trained(fresh())
    other = fresh()
    convert(other)
    np.testing.assert_allclose(
        trained(other).get_latent_representation(),
        reference.get_latent_representation(),
        atol=1e-4,  # float rounding of the statistics fit, carried through one epoch
    )


def test_backed_anndata_trains_and_embeds_like_in_memory(tmp_path, counts_model):
    # a backed file is read in increasing row order within a minibatch, so training draws
    # its masks in another order than in memory: a model of its own, equally valid
    in_memory = fresh()
    in_memory.obs = counts_model.adata.obs[["batch"]].copy()
    in_memory.write_h5ad(tmp_path / "data.h5ad")
    backed = ad.read_h5ad(tmp_path / "data.h5ad", backed="r")
    assert_fp32_path_close(
        counts_model.get_latent_representation(backed),
        counts_model.get_latent_representation(in_memory),
    )
    model = trained(backed)
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()


def test_nan_marks_missing_values_in_dense_sparse_and_layers(counts_model):
    # NaN is missing (not zero): the same profile with NaN or with a missing mask reads alike
    dense = fresh()
    dense.obs = counts_model.adata.obs[["batch"]].copy()
    dense.X[np.random.default_rng(0).random(dense.shape) < 0.3] = np.nan
    sparse = dense.copy()
    sparse.X = sp.csr_matrix(sparse.X)
    expected = counts_model.get_latent_representation(dense)
    assert_fp32_path_close(counts_model.get_latent_representation(sparse), expected)
    trained(dense.copy(), layer=None)  # training reads NaN as missing too
    assert np.isfinite(expected).all()


def test_all_zero_samples_and_genes_train_to_finite_outputs():
    adata = fresh()
    adata.X[0] = 0
    adata.X[:, 1] = 0
    model = trained(adata)
    assert np.isfinite(model.get_latent_representation()).all()
    assert np.isfinite(model.get_imputed_expression(genes=["gene_1"], return_numpy=True)).all()


def test_samples_without_any_observed_value_are_named_in_a_warning(caplog):
    adata = fresh()
    adata.X[[3, 7]] = np.nan
    with caplog.at_level("WARNING", logger="gexbert_sc"):
        model = trained(adata)
    assert "2 samples have no observed value (e.g. ['cell_3', 'cell_7'])" in caplog.text
    assert np.isfinite(model.get_latent_representation()).all()


@pytest.mark.parametrize("n_obs", [1, 2, 9])
def test_fewer_samples_than_a_validation_split_needs_train_on_all(n_obs):
    adata = make_counts_adata(n_obs=n_obs, n_vars=20)
    model = trained(adata)
    assert np.isfinite(model.get_latent_representation()).all()
    GexBERT.setup_anndata(adata)
    with pytest.raises(
        ValueError, match=rf"`early_stopping=True` needs validation samples.*{n_obs}"
    ):
        GexBERT(adata, **TINY_MODEL).train(**ONE_EPOCH, early_stopping=True)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"n_vars": 1}, id="one-gene"),
        pytest.param({"n_context": 500}, id="context-longer-than-the-genes"),
        pytest.param({"batch_size": 1000}, id="batch-larger-than-the-samples"),
    ],
)
def test_small_data_and_large_settings_train(changes):
    adata = make_counts_adata(n_obs=60, n_vars=changes.get("n_vars", 20))
    GexBERT.setup_anndata(adata)
    model = GexBERT(adata, **{**TINY_MODEL, "n_context": changes.get("n_context", 24)})
    model.train(**{**ONE_EPOCH, "batch_size": changes.get("batch_size", 32)})
    assert np.isfinite(model.get_latent_representation()).all()


def test_label_categories_unseen_in_training_do_not_matter_at_prediction(counts_model):
    adata = fresh()
    classifier = GexBERTClassifier.from_gexbert_model(
        counts_model, labels_key="cell_type", adata=adata
    )
    classifier.train(**ONE_EPOCH)
    query = fresh()
    query.obs["cell_type"] = pd.Categorical(["never_seen"] * query.n_obs)
    before = query.copy()
    assert set(classifier.predict(query)) <= {"type_0", "type_1", "type_2"}
    assert_equal(query, before)
