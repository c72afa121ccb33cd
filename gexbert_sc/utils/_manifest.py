"""Manifests of written directories: format and package versions, sizes and SHA-256 of files.

A manifest is a JSON file written last into a directory (after the files it describes); a
reader checks its format version and the files it reads against it, so a damaged or
half-written directory is refused with the file named.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

#: version of the saved directory layout; a load refuses a newer one
FORMAT_VERSION = 1
#: the manifest's file name (after the save's ``prefix``)
MANIFEST_NAME = "gexbert_manifest.json"
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

_CHUNK = 1 << 20


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
        path.name: {"size": path.stat().st_size, "sha256": file_sha256(path)}
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
        size, digest = path.stat().st_size, file_sha256(path)
        if size != record["size"] or digest != record["sha256"]:
            msg = (
                f"{str(path)!r} is damaged: it has {size} bytes (SHA-256 {digest[:12]}...) where "
                f"the manifest records {record['size']} bytes (SHA-256 {record['sha256'][:12]}"
                "...). Save the model again, or restore the file from a copy."
            )
            raise ValueError(msg)


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _json_value(value: Any) -> Any:
    """Return a JSON form of a hyper-parameter value that :mod:`json` does not write."""
    return value.tolist() if hasattr(value, "tolist") else str(value)
