"""Directories written atomically: staged beside their target, fsynced, moved into place.

A writer fills a hidden staging directory beside the target (``.<name>.saving-<pid>-*``),
which is fsynced and moved into place; a writer killed at any moment leaves the previous
directory or the new one at the path, and the staging directories it leaves behind are removed
by the next write of that path. An existing directory is replaced by exchanging the two in one
step (Linux ``renameat2(RENAME_EXCHANGE)``); where that is unavailable, the old directory is
first renamed aside (``.<name>.replaced-<pid>-*``) and the new one renamed in, and a writer or
reader that finds the path missing while an aside copy exists moves it back
(:func:`recover_replaced`).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_STAGING, _ASIDE = "saving", "replaced"
_EXCHANGE = 2  # RENAME_EXCHANGE of linux/fs.h
_AT_FDCWD = -100


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
    """Return whether process ``pid`` runs; ``True`` where this cannot be asked safely.

    A zombie (exited, not yet reaped) does not run: it can write nothing more.
    """
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Return whether process ``pid`` has exited but was not reaped (Linux); else ``False``.

    A killed process whose parent died first waits for the init process to reap it; where
    init does not (some containers), it stays a zombie that :func:`os.kill` still finds.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # the state follows the command name, which is in parentheses and may hold spaces
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


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
