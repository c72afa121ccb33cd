"""Sphinx configuration for gexbert_sc (Sphinx + MyST-NB, offline build)."""

from __future__ import annotations

import sys
import warnings
from datetime import date
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# sphinx-autodoc-typehints 3.6 calls an API that Sphinx 9 deprecates; harmless.
warnings.filterwarnings("ignore", message=".*set_application.*")

HERE = Path(__file__).resolve().parent
# Document the source tree next to this file, installed or not.
sys.path.insert(0, str(HERE.parent))

project = "gexbert_sc"
author = "gexbert_sc developers"
copyright = f"{date.today().year}, {author}"
try:
    release = version("gexbert-sc")
except PackageNotFoundError:
    release = "0.1.0"
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx_autodoc_typehints",
    "sphinxcontrib.bibtex",
]
# No intersphinx: the build machine is offline and builds must never need the network.

# -- sources ----------------------------------------------------------------------------------
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# -- MyST / MyST-NB ---------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3
# Tutorials are executed by tests/test_tutorials.py (GEXBERT_FAST=1), never by the docs build:
# the pages show the outputs stored in the notebooks.
nb_execution_mode = "off"
nb_merge_streams = True

# -- autodoc / autosummary / napoleon ---------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_param = True
typehints_defaults = "comma"
always_document_param_types = False

# -- bibliography -----------------------------------------------------------------------------
# Docstrings cite the paper as :cite:p:`Jiang2025`.
bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"
bibtex_default_style = "plain"

# -- HTML -------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"gexbert_sc {release}"
html_static_path: list[str] = []

nitpicky = False


# -- prose "Returns" sections -----------------------------------------------------------------
# gexbert_sc writes numpy "Returns" sections as prose, scanpy-style ("The aligned AnnData.", or
# "Depending on ``copy``, ..." followed by ``key : type`` entries) and leaves the return type
# to the annotation. Napoleon would read each prose line as a return *type*. Before napoleon
# runs (priority 500, and after sphinx-autodoc-typehints' own ":" marker at 499), a prose
# section is rewritten as a single nameless, typeless entry whose description is the prose:
# it renders as "Returns: <prose>" next to "Return type: <annotation>". Sections already in
# numpy form (a type line followed by an indented description) are left alone.
def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _is_rule(line: str) -> bool:
    text = line.strip()
    return len(text) >= 3 and set(text) == {"-"}


def _prose_returns(app, what, name, obj, options, lines: list[str]) -> None:
    for start in range(len(lines) - 1):
        if lines[start].strip() == "Returns" and _is_rule(lines[start + 1]):
            break
    else:
        return
    base = _indent(lines[start])
    body_start = start + 2
    end = body_start
    while end < len(lines):
        next_is_rule = end + 1 < len(lines) and _is_rule(lines[end + 1])
        if lines[end].strip() and _indent(lines[end]) == base and next_is_rule:
            break
        end += 1
    body = lines[body_start:end]
    if body and body[0].strip() == ":":  # sphinx-autodoc-typehints' marker
        body = body[1:]
    filled = [i for i, line in enumerate(body) if line.strip()]
    if not filled:
        return
    first = filled[0]
    follows = body[first + 1] if first + 1 < len(body) else ""
    if follows.strip() and _indent(follows) > _indent(body[first]):
        return  # numpy form: "type" then an indented description
    pad = " " * base
    indented = [f"{pad}    {line[base:]}" if line.strip() else "" for line in body]
    lines[body_start:end] = [f"{pad}:", *indented]


def setup(app):
    """Register the docstring pre-processor."""
    app.connect("autodoc-process-docstring", _prose_returns, priority=499)
