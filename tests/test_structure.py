"""The package's layering, module sizes and the notebooks' single source."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "helpers"

# Bottom to top; a module may import modules of lower layers, and of its own layer only along the
# edges listed in SAME_LAYER. The map of shared/DESIGN.md and the README's layout section.
LAYERS = [
    ["config", "checkpoint", "layout", "distributed"],
    ["io", "sentences"],
    ["synthetic_text", "synthetic_draw", "synthetic", "sources", "split", "masks", "catalog",
     "unlabeled"],
    ["tiny_clip", "text", "datasets"],
    ["fusion", "model", "losses", "metrics"],
    ["train"],
    ["inference", "evaluation"],
    ["experiments", "bench"],
    ["overlay", "plots", "explorer"],
    ["colab", "staging", "pipeline", "notebooks", "__main__"],
]
SAME_LAYER = {("synthetic", "synthetic_text"), ("synthetic", "synthetic_draw"),
              ("synthetic_draw", "synthetic_text"), ("catalog", "split"), ("catalog", "masks"), ("sources", "synthetic"), ("text", "tiny_clip"),
              ("model", "fusion"), ("evaluation", "inference"), ("plots", "overlay"),
              ("explorer", "plots"), ("explorer", "overlay"), ("notebooks", "pipeline"),
              ("__main__", "pipeline"), ("__main__", "notebooks"), ("pipeline", "colab"),
              ("pipeline", "staging"), ("staging", "colab")}
MAX_LINES = 350


def _rank() -> dict[str, int]:
    return {module: i for i, layer in enumerate(LAYERS) for module in layer}


def _imports(path: Path) -> set[str]:
    """`helpers` modules that `path` imports (relative or absolute, at any depth of the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("helpers."):
                found.add(node.module.split(".")[1])
            elif node.module == "helpers":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("helpers."))
    return found


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules - set(_rank()) == set(), "add the new module to LAYERS"


def test_imports_point_down_only():
    rank = _rank()
    wrong = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem == "__init__":
            continue
        for target in _imports(path):
            here, there = rank[path.stem], rank[target]
            if there > here or (there == here and (path.stem, target) not in SAME_LAYER):
                wrong.append(f"{path.stem} -> {target}")
    assert wrong == []


def test_catalog_does_not_know_the_demo_generator():
    for module in ("catalog", "split", "io"):
        assert not {"synthetic", "synthetic_text", "sources"} & _imports(PACKAGE / f"{module}.py")


def test_modules_are_small_or_say_why():
    long = []
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if len(text.splitlines()) > MAX_LINES and "longer than the others" not in docstring:
            long.append(path.name)
    assert long == []


@pytest.fixture(scope="module")
def built():
    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "tools" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build()


def test_notebooks_match_their_source(built):
    assert sorted(built) == sorted(p.name for p in (ROOT / "notebooks").glob("0*.ipynb"))
    for name, nb in built.items():
        stored = nbformat.read(ROOT / "notebooks" / name, as_version=4)
        cells = [(c.cell_type, c.source) for c in stored.cells]
        assert cells == [(c.cell_type, c.source) for c in nb.cells], \
            f"{name} differs from tools/build_notebooks.py: edit the builder and regenerate"


def test_notebooks_say_their_outputs_are_the_smoke_run(built):
    for name, nb in built.items():
        assert "smoke test" in nb.cells[0].source, name
