"""Atomic, versioned, integrity-checked save and load (issue 14)."""

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from helpers import TINY_MODEL, make_counts_adata

from gexbert_sc import GexBERT, GexBERTClassifier, __version__
from gexbert_sc.utils import FORMAT_VERSION, MANIFEST_NAME, replace_directory
from gexbert_sc.utils._atomic import remove_stale_siblings

LEGACY = Path(__file__).parents[1] / "fixtures" / "saved_models" / "gexbert_0.1.0"


@pytest.fixture(scope="module")
def other_model():
    """An untrained model on the trained model's genes, with other weights."""
    adata = make_counts_adata(seed=1)
    GexBERT.setup_anndata(adata)
    return GexBERT(adata, **TINY_MODEL, seed=7)


def same_weights(model, other) -> bool:
    mine, theirs = model.module.state_dict(), other.module.state_dict()
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def hidden_entries(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.startswith("."))


def edit_manifest(model_dir: Path, **changes) -> None:
    path = model_dir / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------- the manifest
def test_save_writes_a_manifest_of_versions_vocabulary_statistics_and_files(
    trained_model, tmp_path
):
    trained_model.save(tmp_path / "model", save_anndata=True)
    manifest = json.loads((tmp_path / "model" / MANIFEST_NAME).read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["package_version"] == __version__
    assert manifest["model_class"] == "GexBERT"
    assert manifest["vocabulary"] == list(trained_model.var_names)
    assert manifest["hparams"] == json.loads(json.dumps(trained_model.hparams))
    statistics = manifest["statistics"]
    assert set(statistics) == {
        "input_is_counts",
        "gene_share",
        "bin_edges",
        "gene_mean",
        "gene_min",
        "gene_max",
        "max_size_factor",
    }
    edges = trained_model.module.bin_edges
    assert statistics["bin_edges"]["shape"] == list(edges.shape)
    assert statistics["bin_edges"]["dtype"] == "float32"
    assert statistics["bin_edges"]["sha256"] == hashlib.sha256(edges.numpy().tobytes()).hexdigest()
    assert set(manifest["files"]) == {"model.pt", "adata.h5ad"}
    for name, record in manifest["files"].items():
        data = (tmp_path / "model" / name).read_bytes()
        assert record == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert hidden_entries(tmp_path) == []  # the staging directory is gone


# ---------------------------------------------------------------------- atomic saves
def test_save_refuses_an_existing_path_without_overwrite(trained_model, other_model, tmp_path):
    trained_model.save(tmp_path / "model")
    with pytest.raises(FileExistsError, match=r"'.*model' already exists; pass `overwrite=True`"):
        other_model.save(tmp_path / "model")
    assert same_weights(GexBERT.load(tmp_path / "model", adata=False), trained_model)
    (tmp_path / "file").write_text("not a model")
    with pytest.raises(FileExistsError, match=r"'.*file' exists and is not a directory"):
        other_model.save(tmp_path / "file", overwrite=True)
    assert (tmp_path / "file").read_text() == "not a model"


def test_overwrite_replaces_own_files_and_keeps_the_others(trained_model, other_model, tmp_path):
    model_dir = tmp_path / "model"
    trained_model.save(model_dir, save_anndata=True)
    other_model.save(model_dir, prefix="other_", overwrite=True)
    (model_dir / "notes.txt").write_text("kept")
    other_model.save(model_dir, overwrite=True)  # without data: the old adata.h5ad must go
    assert sorted(p.name for p in model_dir.iterdir()) == [
        MANIFEST_NAME,
        "model.pt",
        "notes.txt",
        f"other_{MANIFEST_NAME}",
        "other_model.pt",
    ]
    assert same_weights(GexBERT.load(model_dir, adata=False), other_model)
    with_prefix = GexBERT.load(model_dir, adata=False, prefix="other_")
    assert same_weights(with_prefix, other_model)
    assert hidden_entries(tmp_path) == []


def test_overwrite_through_a_symbolic_link_replaces_what_it_points_to(
    trained_model, other_model, tmp_path
):
    trained_model.save(tmp_path / "model")
    (tmp_path / "link").symlink_to(tmp_path / "model")
    other_model.save(tmp_path / "link", overwrite=True)
    assert (tmp_path / "link").is_symlink()
    assert same_weights(GexBERT.load(tmp_path / "model", adata=False), other_model)
    assert hidden_entries(tmp_path) == []


def test_replacement_without_exchange_and_recovery_of_an_interrupted_one(
    trained_model, other_model, tmp_path
):
    model_dir = tmp_path / "model"
    trained_model.save(model_dir)
    other_model.save(tmp_path / "new")
    replace_directory(tmp_path / "new", model_dir, exchange=False)  # rename aside, rename in
    assert same_weights(GexBERT.load(model_dir, adata=False), other_model)
    assert hidden_entries(tmp_path) == []
    # killed between the two renames: the path is missing, the old model is aside
    os.rename(model_dir, tmp_path / f".model.replaced-{os.getpid()}-0123abcd")
    with pytest.warns(UserWarning, match="restoring the previous model"):
        recovered = GexBERT.load(model_dir, adata=False)
    assert same_weights(recovered, other_model) and model_dir.is_dir()
    assert hidden_entries(tmp_path) == []
    # a save recovers it too, before it decides whether the path exists
    os.rename(model_dir, tmp_path / f".model.replaced-{os.getpid()}-4567cdef")
    with pytest.warns(UserWarning, match="restoring"), pytest.raises(FileExistsError):
        trained_model.save(model_dir)
    assert same_weights(GexBERT.load(model_dir, adata=False), other_model)


def test_leftovers_of_a_killed_save_are_ignored_then_removed(trained_model, tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], stdout=-1)
    dead = int(ended.stdout)  # the pid of a process that has ended
    trained_model.save(tmp_path / "model")
    staging = tmp_path / f".model.saving-{dead}-deadbeef"
    staging.mkdir()
    (staging / "model.pt").write_bytes(b"half a model")
    assert same_weights(GexBERT.load(tmp_path / "model", adata=False), trained_model)
    trained_model.save(tmp_path / "model", overwrite=True)
    assert hidden_entries(tmp_path) == []


def test_a_save_killed_at_any_moment_leaves_the_old_or_the_new_model(tmp_path):
    """SIGKILL a process that saves two models in turn over one path, 15 times."""
    tests_dir = Path(__file__).parents[1]
    target, refs = tmp_path / "model", tmp_path / "refs"
    script = f"""
import os, sys, time
sys.path.insert(0, {str(tests_dir)!r})
from helpers import TINY_MODEL, make_counts_adata
from gexbert_sc import GexBERT
adata = make_counts_adata(n_obs=60, seed=1)
GexBERT.setup_anndata(adata)
models = [GexBERT(adata, **TINY_MODEL, seed=seed) for seed in (1, 2)]
for i, model in enumerate(models):
    model.save(os.path.join({str(refs)!r}, str(i)))
models[0].save({str(target)!r})
start = time.perf_counter()  # a cycle of the child's saves
models[1].save({str(target)!r}, overwrite=True, save_anndata=True)
models[0].save({str(target)!r}, overwrite=True)
print(time.perf_counter() - start, flush=True)
for _ in sys.stdin:  # each line: a child saves model 1, 0, 1, ... until it is killed
    pid = os.fork()
    if pid == 0:
        i = 1
        while True:
            models[i % 2].save({str(target)!r}, overwrite=True, save_anndata=i % 2 == 1)
            i += 1
    print(pid, flush=True)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "stderr", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    try:
        first_line = process.stdout.readline()
        assert first_line, (tmp_path / "stderr").read_text()
        cycle_seconds = float(first_line)
        refs_models = [GexBERT.load(refs / str(i), adata=False) for i in (0, 1)]
        rng, found = random.Random(0), []
        for _ in range(15):
            process.stdin.write("save\n")
            process.stdin.flush()
            child = int(process.stdout.readline())
            time.sleep(rng.uniform(0.0, 3 * cycle_seconds))
            os.kill(child, 9)
            # SIGKILL is delivered asynchronously: read the directory once the child is gone
            assert process.stdout.readline().strip() == "reaped"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # model 0 is saved without data
                loaded = GexBERT.load(target)  # checks every file, the saved data's too
            which = [i for i in (0, 1) if same_weights(loaded, refs_models[i])]
            assert len(which) == 1
            assert (target / "adata.h5ad").exists() == (which[0] == 1)
            found.append(which[0])
    finally:
        process.kill()
        process.wait()
    assert set(found) == {0, 1}, found  # the kills fell on saves of both models
    refs_models[0].save(target, overwrite=True)
    assert hidden_entries(tmp_path) == []


# ---------------------------------------------------------------------- refusals on load
def test_load_refuses_a_newer_format_naming_both_versions(trained_model, tmp_path):
    trained_model.save(tmp_path / "model")
    edit_manifest(tmp_path / "model", format_version=FORMAT_VERSION + 1)
    match = (
        rf"saved in format version {FORMAT_VERSION + 1} .*this gexbert_sc \({__version__}\) "
        rf"reads format versions up to {FORMAT_VERSION}"
    )
    with pytest.raises(ValueError, match=match):
        GexBERT.load(tmp_path / "model", adata=False)


def test_load_refuses_a_model_of_another_class_naming_both(trained_model, tmp_path):
    classifier = GexBERTClassifier.from_gexbert_model(
        trained_model, labels_key="cell_type", adata=trained_model.adata.copy()
    )
    classifier.save(tmp_path / "classifier")
    match = "holds a GexBERTClassifier model; GexBERT.load cannot load it"
    with pytest.raises(ValueError, match=match):
        GexBERT.load(tmp_path / "classifier", adata=False)
    # a directory saved without a manifest is refused on its registry alike
    (tmp_path / "classifier" / MANIFEST_NAME).unlink()
    with pytest.raises(ValueError, match=match):
        GexBERT.load(tmp_path / "classifier", adata=False)
    assert isinstance(
        GexBERTClassifier.load(tmp_path / "classifier", adata=False), GexBERTClassifier
    )


@pytest.mark.parametrize("name", ["model.pt", "adata.h5ad"])
def test_load_names_the_damaged_file(trained_model, tmp_path, name):
    trained_model.save(tmp_path / "model", save_anndata=True)
    path = tmp_path / "model" / name
    flip_byte(path, path.stat().st_size // 2)  # torch would read model.pt without a word
    with pytest.raises(ValueError, match=rf"'.*model/{name}' is damaged: .*the manifest records"):
        GexBERT.load(tmp_path / "model")
    if name == "adata.h5ad":  # a file the load does not read is not checked
        assert same_weights(GexBERT.load(tmp_path / "model", adata=False), trained_model)


def test_load_refuses_a_missing_directory_or_file(trained_model, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'.*nowhere' does not exist"):
        GexBERT.load(tmp_path / "nowhere", adata=False)
    trained_model.save(tmp_path / "model")
    (tmp_path / "model" / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"'.*model' has no 'model.pt'"):
        GexBERT.load(tmp_path / "model", adata=False)
    (tmp_path / "model" / MANIFEST_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=r"'.*model' has no 'model.pt'"):
        GexBERT.load(tmp_path / "model", adata=False)


@pytest.mark.parametrize("legacy", [False, True], ids=["manifest", "legacy"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_load_refuses_a_truncated_or_corrupted_model_file(trained_model, tmp_path, legacy, damage):
    model_dir = tmp_path / "model"
    if legacy:
        shutil.copytree(LEGACY, model_dir)
    else:
        trained_model.save(model_dir)
    path = model_dir / "model.pt"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:-100], "garbage": b"not a model", "empty": b""}[damage])
    with pytest.raises(ValueError, match=r"'.*model/model.pt' is damaged"):
        GexBERT.load(model_dir, adata=False)


def test_load_refuses_a_damaged_manifest(trained_model, tmp_path):
    trained_model.save(tmp_path / "model")
    manifest = tmp_path / "model" / MANIFEST_NAME
    manifest.write_text(manifest.read_text()[:50])
    with pytest.raises(
        ValueError, match=rf"manifest '.*{MANIFEST_NAME}' is damaged .*not readable"
    ):
        GexBERT.load(tmp_path / "model", adata=False)
    manifest.write_text(json.dumps({"format_version": FORMAT_VERSION}))
    with pytest.raises(ValueError, match=r"damaged: it lacks the fields \['package_version'"):
        GexBERT.load(tmp_path / "model", adata=False)


def test_load_refuses_statistics_unlike_the_manifest(trained_model, tmp_path):
    trained_model.save(tmp_path / "model")
    manifest = json.loads((tmp_path / "model" / MANIFEST_NAME).read_text())
    manifest["statistics"]["bin_edges"]["sha256"] = "0" * 64
    edit_manifest(tmp_path / "model", statistics=manifest["statistics"])
    with pytest.raises(ValueError, match=r"differs from its manifest in \['bin_edges'\]"):
        GexBERT.load(tmp_path / "model", adata=False)


def test_legacy_directory_loads_and_is_left_as_it_was():
    before = sorted(p.name for p in LEGACY.iterdir())
    loaded = GexBERT.load(LEGACY, adata=False)
    assert loaded.hparams["d_model"] == TINY_MODEL["d_model"]
    assert sorted(p.name for p in LEGACY.iterdir()) == before  # no manifest is added


def test_the_staging_directory_of_an_exited_unreaped_process_is_removed(tmp_path):
    """A killed saver that nobody reaped (a zombie) no longer runs: its leftovers go."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        stat = Path(f"/proc/{pid}/stat")
        deadline = time.monotonic() + 10
        while stat.read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.01)
        staging = tmp_path / f".model.saving-{pid}-0123abcd"
        staging.mkdir()
        remove_stale_siblings(tmp_path / "model")
        assert not staging.exists()
    finally:
        os.waitpid(pid, 0)
