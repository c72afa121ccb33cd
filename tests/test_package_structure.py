"""The package's layering: imports point down (data < module < train < model < tl), no cycle."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "gexbert_sc"
# a layer may import only layers listed before it (and the top-level helpers); `utils` (argument
# checks, atomic directories, manifests, docstring templates) sits below everything; metrics sit
# above the model because some checks run one (metrics.attention_ablation)
LAYERS = [
    "_constants",
    "utils",
    "data",
    "datasets",
    "module",
    "train",
    "model",
    "metrics",
    "tl",
    "pl",
]
TOP_LEVEL = {"__init__", "__main__", "_demo"}


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> set[str]:
    """``gexbert_sc`` sub-packages that ``path`` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "gexbert_sc" and len(parts) > 1:
                found.add(parts[1])
    return found


FILES = [p for p in PACKAGE.rglob("*.py") if _layer(p) not in TOP_LEVEL]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    layer = _layer(path)
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    upward = _imports(path) - allowed
    assert not upward, f"{path.relative_to(PACKAGE)} ({layer}) imports higher layers {upward}"


def test_every_subpackage_has_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert subpackages | modules <= set(LAYERS) | TOP_LEVEL
