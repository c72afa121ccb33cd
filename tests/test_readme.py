"""The README's notebook example runs as written, on a subsample of its data set."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

import gexbert_sc
from gexbert_sc._constants import OUTPUT_KEYS

README = Path(__file__).resolve().parents[1] / "README.md"
N_CELLS = 150
# the example trains for as long as a user would; here one epoch shows that it runs
EPOCHS = re.compile(r"max_epochs=\d+")


def readme_example() -> str:
    """The code block of the README's "In a notebook" section."""
    section = README.read_text().split("## In a notebook", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match, "README: no ```python block under '## In a notebook'"
    return match.group(1)


def test_readme_stays_a_page():
    assert len(README.read_text().splitlines()) <= 150


def test_readme_example_runs_and_writes_its_outputs(monkeypatch, tmp_path):
    code = readme_example()
    assert len(EPOCHS.findall(code)) == 2, "the example's two train() calls name max_epochs"
    full = gexbert_sc.datasets.pbmc68k
    rows = np.random.default_rng(0).choice(700, N_CELLS, replace=False)
    monkeypatch.setattr(gexbert_sc.datasets, "pbmc68k", lambda: full()[np.sort(rows)].copy())
    monkeypatch.chdir(tmp_path)  # Lightning's logs stay out of the repository
    namespace: dict = {}
    exec(compile(EPOCHS.sub("max_epochs=1", code), str(README), "exec"), namespace)

    adata, panel, model = namespace["adata"], namespace["panel"], namespace["model"]
    assert adata.n_obs == N_CELLS
    assert adata.obsm["X_gexbert"].shape == (N_CELLS, model.module.d_model)
    assert "X_umap" in adata.obsm
    imputed = adata.layers["gexbert_imputed"]
    assert imputed.shape == adata.shape and np.isfinite(imputed).all()
    # the panel: 64 measured genes, the rest missing, each cell labelled with a known type
    assert np.isnan(panel.X[:, 64:]).all() and not np.isnan(panel.X[:, :64]).any()
    prediction = panel.obs["gexbert_prediction"]
    assert isinstance(prediction.dtype, pd.CategoricalDtype)
    assert set(prediction.cat.categories) == set(adata.obs["bulk_labels"].cat.categories)
    assert prediction.notna().all()


def test_readme_output_keys_are_the_writers_defaults():
    """Every key of the README's output table is one a writer uses by default."""
    table = README.read_text().split("## Output keys", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r'\w+\["(\w+)"\]', table))
    keys = OUTPUT_KEYS
    defaults = {
        keys.EMBEDDING,
        keys.IMPUTED,
        keys.IMPUTED + keys.IMPUTED_MASK_SUFFIX,
        keys.IMPUTED + keys.IMPUTED_STD_SUFFIX,
        keys.IMPUTED + keys.IMPUTED_LOWER_SUFFIX,
        keys.IMPUTED + keys.IMPUTED_UPPER_SUFFIX,
        keys.PREDICTION,
        keys.PREDICTION + keys.CONFIDENCE_SUFFIX,
        keys.PREDICTION + keys.PROBA_SUFFIX,
        keys.RISK,
        keys.ANCHOR,
        keys.RANK_IMPORTANCE,
        keys.RANK_ATTENTION,
        keys.GENE_EMBEDDING,
        keys.UNS,
    }
    assert named == defaults
