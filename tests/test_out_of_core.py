"""Out-of-core data: a backed ``.h5ad`` larger than the memory it may use, and several files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata.experimental import AnnCollection, concat_on_disk
from anndata.io import sparse_dataset, write_elem
from helpers import TINY_MODEL, assert_fp32_path_close, make_counts_adata
from scvi.dataloaders import CollectionAdapter

from gexbert_sc import GexBERT

MiB = 2**20
#: what set-up, statistics, training and embedding may add to the memory of a fresh
#: interpreter that has imported the package and opened the file, as a share of the file
MEMORY_BUDGET = 0.5

# Run in a fresh interpreter, so that its peak resident memory (VmHWM) is its own. The
# baseline is the resident memory after the imports and opening the file backed.
CHILD = """
import json, sys
import anndata as ad, numpy as np
from gexbert_sc import GexBERT

def memory(field):
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024

path, model_kwargs = sys.argv[1], json.loads(sys.argv[2])
adata = ad.read_h5ad(path, backed="r")
baseline = memory("VmRSS")
GexBERT.setup_anndata(adata, batch_key="batch")
model = GexBERT(adata, **model_kwargs)
model.train(
    max_epochs=1, max_steps=20, batch_size=128, train_size=1.0, accelerator="cpu",
    enable_progress_bar=False,
)
rows = np.arange(0, adata.n_obs, 10)  # spread over the whole file
latent = model.get_latent_representation(indices=rows, batch_size=256)
print(json.dumps({
    "baseline": baseline,
    "peak": memory("VmHWM"),
    "loss_finite": bool(np.isfinite(model.history["train_loss"].to_numpy(float)).all()),
    "latent_shape": list(latent.shape),
    "latent_finite": bool(np.isfinite(latent).all()),
}))
"""


def write_sparse_h5ad(
    path: Path, n_obs: int, n_vars: int, per_row: int, chunk: int = 5_000, seed: int = 0
) -> None:
    """Write a counts ``.h5ad`` with a CSR ``X``, ``chunk`` rows at a time (never held whole).

    Every row stores ``per_row`` counts in random genes; ``obs["batch"]`` alternates.
    """
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(
        {"batch": pd.Categorical(np.where(np.arange(n_obs) % 2, "a", "b"))},
        index=[f"cell_{i}" for i in range(n_obs)],
    )
    ad.AnnData(obs=obs, var=pd.DataFrame(index=[f"gene_{j}" for j in range(n_vars)])).write_h5ad(
        path
    )
    with h5py.File(path, "a") as file:
        for start in range(0, n_obs, chunk):
            n_rows = min(chunk, n_obs - start)
            genes = np.sort(np.argsort(rng.random((n_rows, n_vars)), axis=1)[:, :per_row], axis=1)
            block = sp.csr_matrix(
                (
                    rng.integers(1, 20, n_rows * per_row).astype(np.float32),
                    genes.ravel().astype(np.int32),
                    np.arange(0, n_rows * per_row + 1, per_row),
                ),
                shape=(n_rows, n_vars),
            )
            if start == 0:
                write_elem(file, "X", block)
            else:
                sparse_dataset(file["X"]).append(block)


@pytest.mark.slow
def test_backed_file_larger_than_the_memory_budget_trains_and_embeds(tmp_path):
    path = tmp_path / "large.h5ad"
    write_sparse_h5ad(path, n_obs=100_000, n_vars=1_000, per_row=700)
    file_size = path.stat().st_size  # 560 MB (534 MiB) of CSR data and indices
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), json.dumps(TINY_MODEL)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["loss_finite"]
    assert result["latent_shape"] == [10_000, TINY_MODEL["d_model"]]
    assert result["latent_finite"]
    added = result["peak"] - result["baseline"]
    assert added < MEMORY_BUDGET * file_size, (
        f"peak added {added / MiB:.0f} MiB for a {file_size / MiB:.0f} MiB file"
    )


def test_several_files_concatenated_on_disk_train_and_embed_like_in_memory(tmp_path):
    parts = [make_counts_adata(n_obs=40, n_vars=20, seed=seed) for seed in (0, 1)]
    paths = []
    for i, part in enumerate(parts):
        part.obs_names = [f"file{i}_{name}" for name in part.obs_names]
        part.X = sp.csr_matrix(part.X)
        paths.append(tmp_path / f"part{i}.h5ad")
        part.write_h5ad(paths[-1])
    concat_on_disk(paths, tmp_path / "all.h5ad", label="file")
    backed = ad.read_h5ad(tmp_path / "all.h5ad", backed="r")
    in_memory = ad.concat(parts, label="file")
    assert backed.obs_names.equals(in_memory.obs_names)
    GexBERT.setup_anndata(backed, batch_key="batch")
    model = GexBERT(backed, **TINY_MODEL)
    model.train(max_epochs=1, batch_size=32, accelerator="cpu", enable_progress_bar=False)
    latent = model.get_latent_representation()
    assert latent.shape == (80, TINY_MODEL["d_model"])
    assert_fp32_path_close(latent, model.get_latent_representation(in_memory))


@pytest.mark.parametrize("adapt", [False, True], ids=["collection", "scvi-adapter"])
def test_a_collection_of_files_is_refused_with_the_on_disk_alternative(tmp_path, adapt):
    paths = []
    for i in range(2):
        part = make_counts_adata(n_obs=10, n_vars=5, seed=i)
        part.obs_names = [f"file{i}_{name}" for name in part.obs_names]
        paths.append(tmp_path / f"part{i}.h5ad")
        part.write_h5ad(paths[-1])
    collection = AnnCollection([ad.read_h5ad(p, backed="r") for p in paths], join_vars="inner")
    with pytest.raises(TypeError, match="concat_on_disk"):
        GexBERT.setup_anndata(CollectionAdapter(collection) if adapt else collection)
