import anndata as ad
import numpy as np
import pytest
from helpers import make_counts_adata

from gexbert_sc.__main__ import main


def test_demo_fast_runs_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GEXBERT_FAST", "1")
    assert main(["--no-progress", "demo", "--output-dir", str(tmp_path)]) == 0
    report = capsys.readouterr().out
    assert "kNN accuracy" in report and "PCA-50" in report
    adata = ad.read_h5ad(tmp_path / "pbmc68k_gexbert.h5ad")
    assert adata.obsm["X_gexbert"].shape == (700, 64)
    assert adata.layers["gexbert_imputed"].shape == (700, 765)
    assert (tmp_path / "umap_gexbert.png").stat().st_size > 10_000


def test_train_embed_impute_commands(tmp_path, capsys):
    adata = make_counts_adata()
    adata.X[np.random.default_rng(0).random(adata.shape) < 0.1] = np.nan
    adata.write_h5ad(tmp_path / "in.h5ad")
    model_dir = str(tmp_path / "model")
    tiny = ["--d-model", "16", "--n-layers", "1", "--n-context", "16", "--max-epochs", "1"]
    assert (
        main(["--no-progress", "train", str(tmp_path / "in.h5ad"), "--model-dir", model_dir, *tiny])
        == 0
    )
    assert (
        main(
            [
                "embed",
                str(tmp_path / "in.h5ad"),
                "--model-dir",
                model_dir,
                "--output",
                str(tmp_path / "e.h5ad"),
            ]
        )
        == 0
    )
    assert ad.read_h5ad(tmp_path / "e.h5ad").obsm["X_gexbert"].shape == (120, 16)
    assert (
        main(
            [
                "impute",
                str(tmp_path / "in.h5ad"),
                "--model-dir",
                model_dir,
                "--output",
                str(tmp_path / "i.h5ad"),
            ]
        )
        == 0
    )
    assert not np.isnan(ad.read_h5ad(tmp_path / "i.h5ad").layers["gexbert_imputed"]).any()
    reordered = adata[:, ::-1].copy()
    reordered.write_h5ad(tmp_path / "reordered.h5ad")
    args = [
        "embed",
        str(tmp_path / "reordered.h5ad"),
        "--model-dir",
        model_dir,
        "--output",
        str(tmp_path / "r.h5ad"),
    ]
    assert main(args) == 2
    assert "another order" in capsys.readouterr().err
    assert main([*args, "--align"]) == 0


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit):
        main(["frobnicate"])


def test_predict_command_on_a_panel(tmp_path, classifier_dir):
    panel = make_counts_adata(seed=3)[:, 5:30].copy()
    del panel.obs["cell_type"]
    panel.write_h5ad(tmp_path / "panel.h5ad")
    args = ["predict", str(tmp_path / "panel.h5ad"), "--model-dir", classifier_dir]
    assert main([*args, "--output", str(tmp_path / "p.h5ad"), "--align"]) == 0
    result = ad.read_h5ad(tmp_path / "p.h5ad")
    assert set(result.obs["gexbert_prediction"].cat.categories) == {"type_0", "type_1", "type_2"}
    np.testing.assert_allclose(result.obsm["gexbert_prediction_proba"].sum(axis=1), 1.0)


@pytest.fixture
def classifier_dir(tmp_path) -> str:
    from helpers import TINY_MODEL, TINY_TRAIN

    from gexbert_sc import GexBERT, GexBERTClassifier

    adata = make_counts_adata(seed=3)
    GexBERT.setup_anndata(adata, labels_key="cell_type")
    model = GexBERT(adata, **TINY_MODEL)
    model.train(**{**TINY_TRAIN, "max_epochs": 1})
    classifier = GexBERTClassifier.from_gexbert_model(model)
    classifier.train(**{**TINY_TRAIN, "max_epochs": 1})
    classifier.save(tmp_path / "classifier")
    return str(tmp_path / "classifier")
