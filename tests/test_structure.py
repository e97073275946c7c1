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

# The subpackages, bottom to top (README "Layout"); the modules directly in `helpers/` are the top
# (settings of a run, pipeline, Colab, notebook runner, CLI). A module imports from its own
# subpackage and from those below it, never from one above.
LAYERS = ["core", "data", "text", "model", "training", "inference", "evaluation", "viz", ""]
# The demo generator is a data source: only `sources` (and what sits above `data`) knows it.
DEMO = "helpers.data.demo"
MAX_LINES = 350


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (`helpers.data.catalog`), `__init__` files
    included under their package's name."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _package(name: str, path: Path) -> list[str]:
    parts = name.split(".")
    return parts if path.name == "__init__.py" else parts[:-1]


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports (relative or absolute, at any depth of the file)."""
    found = set()
    here = _package(name, path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = ".".join(base + (node.module.split(".") if node.module else []))
            if not target.startswith("helpers"):
                continue
            for alias in node.names:  # `from .core import distributed` imports a module
                child = f"{target}.{alias.name}"
                found.add(child if child in known else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("helpers"))
    return {f for f in found if f in known and f != name}


def layer(name: str) -> int:
    parts = name.split(".")
    sub = parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else ""
    return LAYERS.index(sub)


def test_every_module_lives_in_a_known_layer():
    for name in modules():
        parts = name.split(".")
        assert len(parts) <= 2 or parts[1] in LAYERS, f"{name}: add its folder to LAYERS"


def test_imports_point_down_only():
    known = modules()
    wrong = [f"{name} -> {target}" for name, path in known.items() for target in imports(name, path, set(known))
             if layer(target) > layer(name) and name != "helpers"]
    assert wrong == []


def test_no_import_cycles():
    """Inside a subpackage modules may import each other, but never in a circle: each folder reads
    bottom-up too."""
    known = modules()
    graph = {name: imports(name, path, set(known)) - {"helpers"} for name, path in known.items()}
    cycles, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_catalog_does_not_know_the_demo_generator():
    known = modules()
    for name, path in known.items():
        if name.startswith("helpers.data.") and not name.startswith(DEMO) and name != "helpers.data.sources":
            assert not {t for t in imports(name, path, set(known)) if t.startswith(DEMO)}, name


def test_modules_are_small():
    """No module is over `MAX_LINES` lines, without exception: a longer one is split by concern
    (README "Layout")."""
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
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
             *PACKAGE.rglob("*.py"), *ROOT.glob("tests/*.py")]
    found = [f"{p.relative_to(ROOT)}: {phrase!r}" for p in files for phrase in about_the_making
             if phrase.lower() in p.read_text().lower()]
    assert found == []


def test_only_the_notebooks_that_train_ask_colab_for_a_gpu():
    """01 (download, decode) and 04 (look) run on Colab's CPU machines and spend no GPU hours; 02 and
    03 train and ask for one (Colab's keys: `accelerator`, `colab.gpuType`)."""
    for name, nb in stored_notebooks().items():
        trains = name[:2] in ("02", "03")
        assert nb.metadata.get("accelerator") == ("GPU" if trains else None), name
        assert ("gpuType" in nb.metadata.get("colab", {})) == trains, name
