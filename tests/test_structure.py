"""The package's layering, module sizes, the notebooks' shape and the lint of all the code."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


PACKAGE = ROOT / "helpers"


LAYERS = ["core", "data", "text", "model", "training", "inference", "evaluation", "viz", ""]


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


def stored_notebooks() -> dict[str, nbformat.NotebookNode]:
    """The numbered notebooks by file name: the source of the notebooks, stored with the outputs of
    the smoke run that nbval compares."""
    return {p.name: nbformat.read(p, as_version=4) for p in sorted((ROOT / "notebooks").glob("0*.ipynb"))}


def _code(cell) -> str:
    return cell.source.removeprefix("# NBVAL_IGNORE_OUTPUT\n").strip()


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


def texts() -> list[Path]:
    """The project's Markdown texts: the README, data/README.md and everything under docs/."""
    return [ROOT / "README.md", *sorted(ROOT.glob("data/*.md")), *sorted((ROOT / "docs").rglob("*.md"))]


def test_texts_speak_of_the_project_only():
    """README, docs, notebooks, code and tests describe the project, not how or where it was made."""
    # written in pieces, so that this list does not itself contain what it looks for; a check
    # outside the repository covers the words of the making itself
    about_the_making = ["".join(pieces) for pieces in (
        ("measured ", "here"), ("(as ", "here)"), ("DESIGN", ".md"), ("Phase-2 ", "issues"),
        ("seed's ", "premise"), ("this project's ", "2-core"))]
    files = [*texts(), ROOT / "Makefile", *ROOT.glob("notebooks/*.ipynb"), *PACKAGE.rglob("*.py"),
             *ROOT.glob("tests/**/*.py")]
    found = [f"{p.relative_to(ROOT)}: {phrase!r}" for p in files for phrase in about_the_making
             if phrase.lower() in p.read_text().lower()]
    assert found == []


# A finding is written as what was measured with which settings, not as a history of defaults.
HISTORY_PHRASES = ("previous default", "when tried before", "of that time", "default before", "goal")
README_MAX_LINES = 230


def test_readme_is_short_and_the_texts_read_as_findings():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES, "the README is read in five minutes: details go to docs/"
    found = [f"{p.relative_to(ROOT)}: {phrase!r}" for p in texts() for phrase in HISTORY_PHRASES
             if phrase in p.read_text().lower()]
    assert found == []


def _table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of each row of the Markdown table whose header row starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_readme_layout_is_the_package():
    """The README's Layout table lists every folder of `helpers/`, from the bottom layer up, in the
    order of `LAYERS`."""
    rows = _table_rows((ROOT / "README.md").read_text(), "| folder | what lives there |")
    listed = [row[0].strip("`") for row in rows]
    folders = sorted(str(p.parent.relative_to(ROOT)) + "/" for p in PACKAGE.rglob("__init__.py"))
    assert sorted(listed) == folders
    order = [layer(".".join(Path(folder).parts) if folder != "helpers/" else "helpers.__main__")
             for folder in listed]
    assert order == sorted(order), "the table goes from the bottom layer up"


def _old_import_cells(text: str) -> list[str]:
    try:
        return [row[0] for row in _table_rows(text, "| old | new |")]
    except StopIteration:
        return []


def test_links_paths_and_names_in_the_texts_exist():
    """Every relative link, repository path, `make` target and `helpers.*` name in the README,
    data/README.md and docs/ exists (the old import paths excepted), and the README links every
    notebook."""
    import importlib

    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE))
    wrong = []
    for path in texts():
        text = path.read_text()
        where = path.relative_to(ROOT)
        for link in re.findall(r"\]\(([^)\s]+)\)", text):
            if not re.match(r"https?://", link) and not (path.parent / link.split("#")[0]).exists():
                wrong.append(f"{where}: link {link}")
        for old in _old_import_cells(text):
            text = text.replace(old, "")
        spans = re.findall(r"`([^`\n]+)`", text)
        for span in spans:
            if re.fullmatch(r"(helpers|notebooks|tests|tools|docs)/[\w./*-]*|data/README\.md|requirements[\w-]*\.txt",
                            span) and not list(ROOT.glob(span.rstrip("/"))):
                wrong.append(f"{where}: path {span}")
            wrong += [f"{where}: make {t}" for t in re.findall(r"\bmake ([\w-]+)", span) if t not in targets]
        for name in set(re.findall(r"\bhelpers(?:\.\w+)+", " ".join(spans))):
            parts = name.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    found = importlib.import_module(".".join(parts[:cut]))
                    break
                except ModuleNotFoundError:
                    continue
            for attr in parts[cut:]:
                found = getattr(found, attr, None)
            if found is None:
                wrong.append(f"{where}: {name}")
    readme = (ROOT / "README.md").read_text()
    wrong += [f"README.md: no link to {nb}" for nb in stored_notebooks() if f"(notebooks/{nb})" not in readme]
    assert wrong == []


def test_only_the_notebooks_that_train_ask_colab_for_a_gpu():
    """01 (download, decode) and 04 (look) run on Colab's CPU machines and spend no GPU hours; 02 and
    03 train and ask for one (Colab's keys: `accelerator`, `colab.gpuType`)."""
    for name, nb in stored_notebooks().items():
        trains = name[:2] in ("02", "03")
        assert nb.metadata.get("accelerator") == ("GPU" if trains else None), name
        assert ("gpuType" in nb.metadata.get("colab", {})) == trains, name
