"""Saved model directories: written atomically, described by a manifest, checked on load.

A save writes into a hidden staging directory beside the target (``.<name>.saving-<pid>-*``),
fsyncs it and moves it into place; a save killed at any moment leaves the previous model or
the new one at the path, and the staging directories it leaves behind are removed by the next
save of that path (load never reads them). An existing model is replaced by exchanging the two
directories in one step (Linux ``renameat2(RENAME_EXCHANGE)``); where that is unavailable, the
old directory is first renamed aside (``.<name>.replaced-<pid>-*``) and the new one renamed in,
and a save or load that finds the path missing while an aside copy exists moves it back.

The manifest (``gexbert_manifest.json``) records the format version, the package version, the
model class, the vocabulary, the fitted statistics and the hyper-parameters, and the size and
SHA-256 of every file the save wrote.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

#: version of the saved directory layout; a load refuses a newer one
FORMAT_VERSION = 1
#: the manifest's file name (after the save's ``prefix``)
MANIFEST_NAME = "gexbert_manifest.json"
#: module buffers that hold the statistics fitted on the training data
STATISTICS = ("input_is_counts", "gene_share", "bin_edges", "gene_mean")
#: fields every manifest has
MANIFEST_FIELDS = (
    "format_version",
    "package_version",
    "model_class",
    "vocabulary",
    "statistics",
    "hparams",
    "files",
)

_STAGING, _ASIDE = "saving", "replaced"
_EXCHANGE = 2  # RENAME_EXCHANGE of linux/fs.h
_AT_FDCWD = -100
_CHUNK = 1 << 20


# ---------------------------------------------------------------------- atomic directory
@contextmanager
def atomic_directory(
    dir_path: str | os.PathLike, *, overwrite: bool, owned: Collection[str]
) -> Iterator[Path]:
    """Yield an empty staging directory that replaces ``dir_path`` when the block succeeds.

    On success, the entries of an existing ``dir_path`` that the save does not write (names
    outside ``owned``, e.g. another prefix's model) are linked into the staging directory, its
    files are fsynced and it is moved into place (see the module docstring). If the block
    raises, ``dir_path`` is left as it was.

    Parameters
    ----------
    dir_path
        The directory to write; where it is a symbolic link, the directory it points to.
    overwrite
        Whether an existing ``dir_path`` may be replaced.
    owned
        Names of the entries the save writes (or would write); an existing one not written
        this time is dropped, not kept.

    Yields
    ------
    The staging directory, beside ``dir_path``.

    Raises
    ------
    FileExistsError
        If ``dir_path`` exists and ``overwrite`` is ``False``, or it is not a directory.
    """
    target = _real(Path(dir_path))
    recover_replaced(target)
    if target.exists() and not target.is_dir():
        msg = f"`dir_path` {str(target)!r} exists and is not a directory; a model is a directory."
        raise FileExistsError(msg)
    if target.exists() and not overwrite:
        msg = (
            f"`dir_path` {str(target)!r} already exists; pass `overwrite=True` to replace the "
            "model there, or choose another directory."
        )
        raise FileExistsError(msg)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(target)
    staging = _sibling(target, _STAGING)
    staging.mkdir()
    try:
        yield staging
        if target.exists():
            _carry_over(target, staging, owned)
        _fsync_tree(staging)
        replace_directory(staging, target)
    finally:
        # after an exchange the staging path holds the previous model; after a rename, nothing
        shutil.rmtree(staging, ignore_errors=True)


def replace_directory(staging: Path, target: Path, *, exchange: bool = True) -> None:
    """Move the complete directory ``staging`` to ``target`` in a way a crash cannot tear.

    Parameters
    ----------
    staging
        A complete, fsynced directory beside ``target``.
    target
        Where it goes. If it exists, it is exchanged with ``staging`` in one step (``staging``
        then holds the previous directory, for the caller to remove); with ``exchange=False``
        or where the exchange is unavailable, it is renamed aside, ``staging`` is renamed in
        and the aside copy is removed.
    exchange
        Whether to try the one-step exchange first.
    """
    if not target.exists():
        os.rename(staging, target)
    elif not (exchange and _exchange(staging, target)):
        aside = _sibling(target, _ASIDE)
        os.rename(target, aside)
        os.rename(staging, target)
        _fsync_directory(target.parent)  # before the previous model goes
        shutil.rmtree(aside)
    _fsync_directory(target.parent)


def recover_replaced(target: Path) -> None:
    """Move back the previous model if a save was killed between its two renames.

    Does nothing unless ``target`` is missing and an aside copy of it (left by
    :func:`replace_directory` without the exchange) exists; the newest one is renamed back.

    Parameters
    ----------
    target
        A model directory (or a symbolic link to one).
    """
    target = _real(target)
    if target.exists():
        return
    asides = sorted(_siblings(target, _ASIDE), key=lambda path: path.stat().st_mtime_ns)
    if asides:
        msg = (
            f"{str(target)!r} was missing after an interrupted save; restoring the previous "
            f"model from {asides[-1].name!r}."
        )
        warnings.warn(msg, UserWarning, stacklevel=3)
        os.rename(asides[-1], target)
        _fsync_directory(target.parent)


def remove_stale_siblings(target: Path) -> None:
    """Remove the staging and aside directories of ``target`` left by killed saves.

    A directory whose saving process still runs (on this machine) is kept.

    Parameters
    ----------
    target
        A model directory.
    """
    for tag in (_STAGING, _ASIDE):
        for path in _siblings(target, tag):
            if not _is_running(int(path.name.rsplit("-", 2)[-2])):
                shutil.rmtree(path, ignore_errors=True)


def _real(target: Path) -> Path:
    """Return ``target`` as an absolute path, or the directory it points to if it is a link."""
    return target.resolve() if target.is_symlink() else Path(os.path.abspath(target))


def _sibling(target: Path, tag: str) -> Path:
    """Return a new hidden name beside ``target`` that says what it is and whose it is."""
    return target.with_name(f".{target.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")


def _siblings(target: Path, tag: str) -> list[Path]:
    """Return the existing directories named by :func:`_sibling` for ``target`` and ``tag``."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.{tag}-\d+-[0-9a-f]{{8}}")
    if not target.parent.is_dir():
        return []
    return [path for path in target.parent.iterdir() if pattern.fullmatch(path.name)]


def _is_running(pid: int) -> bool:
    """Return whether process ``pid`` runs; ``True`` where this cannot be asked safely."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exchange(first: Path, second: Path) -> bool:
    """Exchange two paths with ``renameat2(RENAME_EXCHANGE)``; ``False`` where unsupported."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


@functools.cache
def _renameat2() -> Any:
    """Return the C library's ``renameat2`` (glibc 2.28+), or ``None`` where there is none."""
    if os.name != "posix":
        return None
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is not None:
        renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
        renameat2.argtypes += [ctypes.c_uint]
    return renameat2


def _carry_over(previous: Path, staging: Path, owned: Collection[str]) -> None:
    """Hard-link (else copy) into ``staging`` the entries of ``previous`` it does not own."""
    for entry in previous.iterdir():
        destination = staging / entry.name
        if entry.name in owned or destination.exists():
            continue
        if entry.is_dir():
            shutil.copytree(entry, destination, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, destination)


def _link_or_copy(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Hard-link ``source`` at ``destination``, copying where links are unsupported."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _fsync_tree(directory: Path) -> None:
    """Flush every file and directory under ``directory`` to disk."""
    for root, _, files in os.walk(directory):
        for name in files:
            descriptor = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        _fsync_directory(Path(root))


def _fsync_directory(directory: Path) -> None:
    """Flush a directory's entries (renames) to disk, where directories can be opened."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# ---------------------------------------------------------------------- manifest
def describe_statistics(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Describe the fitted statistics of a module's state dict.

    Parameters
    ----------
    state
        A module's state dict; the :data:`STATISTICS` buffers it holds are described.

    Returns
    -------
    ``{name: {"shape": [...], "dtype": "float32", "sha256": hex digest of the values}}``.
    """
    described = {}
    for name in STATISTICS:
        if name in state:
            values = state[name].detach().cpu().contiguous()
            described[name] = {
                "shape": list(values.shape),
                "dtype": str(values.dtype).removeprefix("torch."),
                "sha256": hashlib.sha256(values.numpy().tobytes()).hexdigest(),
            }
    return described


def write_manifest(directory: Path, name: str, description: Mapping[str, Any]) -> None:
    """Write the manifest of the files in ``directory`` (written last, after them).

    Parameters
    ----------
    directory
        The directory a save has just written.
    name
        The manifest's file name.
    description
        ``model_class``, ``vocabulary``, ``statistics`` and ``hparams`` of the saved model;
        the versions and the files' sizes and checksums are added.
    """
    from gexbert_sc import __version__

    files = {
        path.name: {"size": path.stat().st_size, "sha256": _file_sha256(path)}
        for path in sorted(directory.iterdir())
        if path.is_file()
    }
    manifest = {
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        **description,
        "files": files,
    }
    text = json.dumps(manifest, indent=1, default=_json_value)
    (directory / name).write_text(text + "\n", encoding="utf-8")


def read_manifest(directory: Path, name: str) -> dict[str, Any] | None:
    """Read and check a saved model's manifest.

    Parameters
    ----------
    directory
        A saved model directory.
    name
        The manifest's file name.

    Returns
    -------
    The manifest, or ``None`` for a directory saved without one (by gexbert_sc 0.1).

    Raises
    ------
    ValueError
        If the manifest is not readable JSON with every field, or its format version is
        newer than this package reads.
    """
    path = directory / name
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        msg = f"The manifest {str(path)!r} is damaged ({error}); it is not readable JSON."
        raise ValueError(msg) from error
    missing = [f for f in MANIFEST_FIELDS if not isinstance(manifest, dict) or f not in manifest]
    if missing:
        msg = f"The manifest {str(path)!r} is damaged: it lacks the fields {missing}."
        raise ValueError(msg)
    found = manifest["format_version"]
    if not isinstance(found, int) or found > FORMAT_VERSION:
        from gexbert_sc import __version__

        msg = (
            f"{str(directory)!r} was saved in format version {found!r} (by gexbert_sc "
            f"{manifest['package_version']}); this gexbert_sc ({__version__}) reads format "
            f"versions up to {FORMAT_VERSION}. Upgrade gexbert_sc to load it."
        )
        raise ValueError(msg)
    return manifest


def check_model_class(directory: Path, found: str, cls: type, allowed: Collection[str]) -> None:
    """Refuse a model saved by another class than ``cls`` (or the ``allowed`` class names).

    Parameters
    ----------
    directory
        The saved model directory (named in the message).
    found
        The class that saved it.
    cls
        The class loading it.
    allowed
        Other class names ``cls`` may load.

    Raises
    ------
    ValueError
        If ``found`` is neither ``cls``'s name nor in ``allowed``.
    """
    if found != cls.__name__ and found not in allowed:
        msg = (
            f"{str(directory)!r} holds a {found} model; {cls.__name__}.load cannot load it. "
            f"Load it with {found}.load."
        )
        raise ValueError(msg)


def verify_files(directory: Path, manifest: Mapping[str, Any], names: Collection[str]) -> None:
    """Check the files ``names`` of a saved model against its manifest.

    Parameters
    ----------
    directory
        The saved model directory.
    manifest
        Its manifest.
    names
        The files to check (those a load reads); each must be listed in the manifest.

    Raises
    ------
    FileNotFoundError
        If a file is missing.
    ValueError
        If the manifest does not list a file, or a file's size or SHA-256 differs from the
        manifest's (the file is damaged).
    """
    for name in names:
        path = directory / name
        record = manifest["files"].get(name)
        if record is None:
            msg = (
                f"The manifest of {str(directory)!r} does not list {name!r}; it lists "
                f"{sorted(manifest['files'])}."
            )
            raise ValueError(msg)
        if not path.is_file():
            msg = f"{str(directory)!r} has no {name!r}, which its manifest lists."
            raise FileNotFoundError(msg)
        size, digest = path.stat().st_size, _file_sha256(path)
        if size != record["size"] or digest != record["sha256"]:
            msg = (
                f"{str(path)!r} is damaged: it has {size} bytes (SHA-256 {digest[:12]}...) where "
                f"the manifest records {record['size']} bytes (SHA-256 {record['sha256'][:12]}"
                "...). Save the model again, or restore the file from a copy."
            )
            raise ValueError(msg)


def check_loaded(directory: Path, manifest: Mapping[str, Any], actual: Mapping[str, Any]) -> None:
    """Check that a loaded model has the vocabulary and statistics its manifest records.

    Parameters
    ----------
    directory
        The saved model directory.
    manifest
        Its manifest.
    actual
        ``{"vocabulary": [...], "statistics": describe_statistics(...)}`` of the loaded model.

    Raises
    ------
    ValueError
        If either differs from the manifest's.
    """
    saved, loaded = manifest["statistics"], actual["statistics"]
    differ = sorted(name for name in {*saved, *loaded} if saved.get(name) != loaded.get(name))
    if manifest["vocabulary"] != actual["vocabulary"]:
        differ.append("vocabulary")
    if differ:
        msg = (
            f"The model loaded from {str(directory)!r} differs from its manifest in {differ}; "
            "the directory is inconsistent. Save the model again."
        )
        raise ValueError(msg)


def read_model_file(path: Path) -> dict[str, Any]:
    """Read a saved ``model.pt``, refusing a missing, truncated or corrupted one clearly.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    The saved dictionary (state dict, var names, attributes).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If it cannot be read as a saved model.
    """
    if not path.is_file():
        msg = f"{str(path.parent)!r} has no {path.name!r}: it is not a saved model directory."
        raise FileNotFoundError(msg)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a damaged pickle or zip fails in many ways
        msg = (
            f"{str(path)!r} is damaged (truncated or corrupted: {type(error).__name__}: "
            f"{str(error)[:200]}); save the model again, or restore the file from a copy."
        )
        raise ValueError(msg) from error
    if not isinstance(saved, dict) or not {"model_state_dict", "attr_dict"} <= saved.keys():
        msg = f"{str(path)!r} is not a saved model: it lacks the state dict and attributes."
        raise ValueError(msg)
    return saved


def _file_sha256(path: Path) -> str:
    """Return the SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _json_value(value: Any) -> Any:
    """Return a JSON form of a hyper-parameter value that :mod:`json` does not write."""
    return value.tolist() if hasattr(value, "tolist") else str(value)
