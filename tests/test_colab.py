"""The Colab setup (helpers/colab.py): the repository address, the GPU check, the setup cell."""
from __future__ import annotations

import nbformat
import pytest

from helpers import colab
from helpers.core.environment import REPO_URL
from tests.test_structure import ROOT


def setup_cell(nb):
    """The code cell that calls `colab.setup`."""
    return next(c for c in nb.cells if c.cell_type == "code" and "colab.setup(" in c.source)


def test_repo_url_placeholder_and_bad_addresses_say_what_to_set(tmp_path):
    with pytest.raises(colab.SetupError, match="placeholder.*set REPO_URL in helpers/core/environment.py.*tools/set_repo.py OWNER/NAME"):
        colab.check_repo_url("https://github.com/YOUR-ACCOUNT/cxr-text-localization.git")
    with pytest.raises(colab.SetupError, match="not a git address"):
        colab.check_repo_url("github.com/someone/project")
    with pytest.raises(colab.SetupError, match="cannot be reached.*set REPO_URL"):
        colab.check_repo_url(f"file://{tmp_path}/no-such-repo.git")
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    colab.check_repo_url(f"file://{tmp_path}/repo")  # reachable: no error


def test_gpu_check(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(colab.SetupError, match=r"Runtime > Change runtime type > GPU.*DEVICE = \"cpu\""):
        colab.check_device("real")
    assert colab.check_device("real", "cpu") == "device: cpu (set by DEVICE)"
    assert colab.check_device("demo") == "device: cpu"
    assert "02 and 03 stop without a GPU" in colab.check_device("real", needs_gpu=False)  # 01, 04
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Tesla T4")
    assert colab.check_device("real") == "device: cuda (Tesla T4)"


def test_notebooks_and_readme_name_the_repository_of_layout():
    from tests.test_structure import stored_notebooks

    for name, nb in stored_notebooks().items():
        assert colab.colab_link(name) in nb.cells[0].source, f"{name}: badge"
        assert f'REPO_URL = "{REPO_URL}"' in setup_cell(nb).source, f"{name}: setup cell"
    assert colab.colab_badge("01_data_setup_and_exploration.ipynb") in (ROOT / "README.md").read_text()
    assert colab.colab_link("04_visualization.ipynb", "https://github.com/me/proj.git") == \
        "https://colab.research.google.com/github/me/proj/blob/main/notebooks/04_visualization.ipynb"


def test_set_repo_points_layout_readme_and_every_notebook_at_a_fork(tmp_path, capsys):
    """One command changes the address everywhere it appears; stored outputs stay as they were."""
    import importlib.util
    import shutil

    from tests.test_structure import ROOT

    spec = importlib.util.spec_from_file_location("set_repo", ROOT / "tools" / "set_repo.py")
    set_repo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(set_repo)
    (tmp_path / "helpers" / "core").mkdir(parents=True)
    shutil.copy(ROOT / set_repo.ENVIRONMENT, tmp_path / set_repo.ENVIRONMENT)
    shutil.copy(ROOT / "README.md", tmp_path)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    old = set_repo.current_slug(tmp_path)
    assert set_repo.main(["https://github.com/someone/cxr-fork.git", "--root", str(tmp_path)]) == 0
    assert "updated README.md" in capsys.readouterr().out
    assert 'REPO_URL = "https://github.com/someone/cxr-fork.git"' in (tmp_path / set_repo.ENVIRONMENT).read_text()
    link = colab.colab_link("01_data_setup_and_exploration.ipynb", "https://github.com/someone/cxr-fork.git")
    assert link in (tmp_path / "README.md").read_text()
    for path in sorted((tmp_path / "notebooks").glob("*.ipynb")):
        nb, before = nbformat.read(path, as_version=4), nbformat.read(ROOT / "notebooks" / path.name, as_version=4)
        assert colab.colab_link(path.name, "https://github.com/someone/cxr-fork.git") in nb.cells[0].source
        assert "https://github.com/someone/cxr-fork.git" in "".join(c.source for c in nb.cells)
        assert old not in path.read_text()
        assert [c.get("outputs") for c in nb.cells] == [c.get("outputs") for c in before.cells]
    assert set_repo.main(["not a repo", "--root", str(tmp_path)]) == 1
    assert "OWNER/NAME" in capsys.readouterr().err
    assert set_repo.parse_slug("git@github.com:me/x.git") == "me/x"


def test_setup_off_colab_prints_run_folder_and_device(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    run = colab.setup("demo", None, "demo", tmp_path / "run", "cpu")
    assert (run.data_source, run.mode, run.run_dir) == ("demo", "demo", tmp_path / "run")
    out = capsys.readouterr().out
    assert "mode demo" in out and "device: cpu (set by DEVICE)" in out and "project:" not in out
