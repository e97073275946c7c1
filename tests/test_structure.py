"""The package's layering, module sizes, the notebooks' shape and the lint of all the code."""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "helpers"

# Bottom to top; a module may import modules of lower layers, and of its own layer only along the
# edges listed in SAME_LAYER. The map of the README's "Layout" section.
LAYERS = [
    ["config", "checkpoint", "layout", "distributed", "record"],
    ["io", "sentences", "places"],
    ["synthetic_text", "synthetic_plan", "synthetic_draw", "synthetic", "sources", "split", "masks", "catalog",
     "unlabeled"],
    ["tiny_clip", "text", "reader", "cache", "datasets"],
    ["encoders", "fusion", "model", "losses", "metrics"],
    ["loop", "train"],
    ["inference", "evaluation"],
    ["experiments", "bench"],
    ["overlay", "charts", "plots", "report_view", "explorer"],
    ["colab", "staging", "pipeline", "notebooks", "__main__"],
]
SAME_LAYER = {("record", "checkpoint"), ("reader", "text"), ("synthetic", "synthetic_text"), ("synthetic", "synthetic_draw"),
              ("synthetic", "synthetic_plan"), ("synthetic_plan", "synthetic_text"),
              ("synthetic_draw", "synthetic_text"), ("catalog", "split"), ("places", "sentences"), ("catalog", "masks"), ("sources", "synthetic"), ("text", "tiny_clip"),
              ("datasets", "cache"),
              ("model", "fusion"), ("model", "encoders"), ("train", "loop"), ("evaluation", "inference"), ("plots", "overlay"),
              ("plots", "charts"),
              ("explorer", "plots"), ("explorer", "overlay"), ("report_view", "overlay"),
              ("explorer", "report_view"), ("notebooks", "pipeline"),
              ("__main__", "pipeline"), ("__main__", "notebooks"), ("colab", "pipeline"),
              ("pipeline", "staging")}
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
        assert not {"synthetic", "synthetic_text", "synthetic_plan", "sources"} & _imports(PACKAGE / f"{module}.py")


def test_modules_are_small():
    """No module is over `MAX_LINES` lines, without exception: a longer one is split by concern
    (README "Layout")."""
    sizes = {path.name: len(path.read_text().splitlines()) for path in PACKAGE.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def stored_notebooks() -> dict[str, nbformat.NotebookNode]:
    """The numbered notebooks by file name: the source of the notebooks, stored with the outputs of
    the smoke run that nbval compares."""
    return {p.name: nbformat.read(p, as_version=4) for p in sorted((ROOT / "notebooks").glob("0*.ipynb"))}


def _code(cell) -> str:
    return cell.source.removeprefix("# NBVAL_IGNORE_OUTPUT\n").strip()


def test_notebooks_say_their_outputs_are_the_smoke_run():
    notebooks = stored_notebooks()
    assert len(notebooks) == 4
    for name, nb in notebooks.items():
        assert nb.cells[0].cell_type == "markdown" and "smoke test" in nb.cells[0].source, name


def test_notebooks_start_with_parameters_then_one_setup_call():
    for name, nb in stored_notebooks().items():
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code[0].source.startswith("DATA_SOURCE = "), f"{name}: the first code cell holds the parameters"
        assert any(c.cell_type == "markdown" and c.source.startswith("## Parameters") for c in nb.cells[:2])
        setup = code[1].source
        assert setup.startswith("# NBVAL_IGNORE_OUTPUT") and \
            "RUN = colab.setup(DATA_SOURCE, MASKS_SOURCE, MODE, OUT_DIR, DEVICE)" in setup, name


def test_no_code_cell_is_copied_between_notebooks():
    """Shared logic lives in `helpers`: a code cell found in several notebooks is one line (a call),
    except the setup cell, whose few lines fetch the project on a fresh Colab machine before
    `helpers` can be imported, then make the one call."""
    where = defaultdict(list)
    for name, nb in stored_notebooks().items():
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                where[_code(cell)].append(f"{name} cell {i}")
    copied = {source: places for source, places in where.items() if len(places) > 1}
    setups = [source for source in copied if "colab.setup(" in source]
    assert len(setups) == 1 and len(copied[setups[0]]) == 4, "one setup cell, the same in every notebook"
    assert len(setups[0].splitlines()) <= 16
    long = {places[0]: places[1:] for source, places in copied.items()
            if source not in setups and len(source.splitlines()) > 1}
    assert long == {}, "move what these cells share into a helpers function"


def test_code_passes_ruff():
    """`ruff check` (rules in ruff.toml) over the package, the tests, the tools and the notebooks'
    code cells."""
    try:
        import ruff  # noqa: F401
    except ImportError:
        pytest.fail("ruff is missing: pip install -r requirements-dev.txt")
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                           str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_texts_speak_of_the_project_only():
    """README, docs, notebooks, code and tests describe the project, not how or where it was made."""
    # written in pieces, so that this list does not itself contain what it looks for; a check
    # outside the repository covers the words of the making itself
    about_the_making = ["".join(pieces) for pieces in (
        ("measured ", "here"), ("(as ", "here)"), ("DESIGN", ".md"), ("Phase-2 ", "issues"),
        ("seed's ", "premise"), ("this project's ", "2-core"))]
    files = [ROOT / "README.md", ROOT / "Makefile", *ROOT.glob("data/*.md"), *ROOT.glob("notebooks/*.ipynb"),
             *PACKAGE.glob("*.py"), *ROOT.glob("tests/*.py")]
    found = [f"{p.relative_to(ROOT)}: {phrase!r}" for p in files for phrase in about_the_making
             if phrase.lower() in p.read_text().lower()]
    assert found == []
