"""The Colab setup helpers, the run folder of the series and the headless runner."""
from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from helpers import colab

from helpers.core import environment
from helpers.core.environment import REPO_URL
from helpers.core.layout import RUNS_ROOT
from tests.test_structure import ROOT


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


def test_default_run_folder_on_colab_is_on_drive(tmp_path, capsys):
    assert environment.default_runs_root(colab=False) == RUNS_ROOT
    assert environment.default_runs_root(colab=True, drive_mount=tmp_path) == RUNS_ROOT  # not mounted
    assert "Drive is not mounted" in capsys.readouterr().err
    (tmp_path / "MyDrive").mkdir()
    assert environment.default_runs_root(colab=True, drive_mount=tmp_path) == \
        tmp_path / "MyDrive" / "cxr-text-localization" / "runs"


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


def setup_cell(nb):
    """The code cell that calls `colab.setup`."""
    return next(c for c in nb.cells if c.cell_type == "code" and "colab.setup(" in c.source)


def test_setup_off_colab_prints_run_folder_and_device(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    run = colab.setup("demo", None, "demo", tmp_path / "run", "cpu")
    assert (run.data_source, run.mode, run.run_dir) == ("demo", "demo", tmp_path / "run")
    out = capsys.readouterr().out
    assert "mode demo" in out and "device: cpu (set by DEVICE)" in out and "project:" not in out


def _notebook(folder, name, source):
    nbformat.write(new_notebook(cells=[new_code_cell(source)], metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}),
        folder / name)


def test_runner_cell_timeout_names_notebook_cell_and_resume(tmp_path, monkeypatch):
    from helpers.notebooks import NotebookRunError, run_notebooks

    monkeypatch.setenv("CXR_MODE", "smoke")
    monkeypatch.setenv("CXR_SMOKE", "1")
    _notebook(tmp_path, "07_sleepy.ipynb", "import time\ntime.sleep(5)")
    with pytest.raises(NotebookRunError, match=r"07_sleepy.ipynb: cell 0 \('time.sleep\(5\)'\) ran past 1 s"
                                               r".*--mode smoke --only 07"):
        run_notebooks(tmp_path / "out", "smoke", timeout=1, notebook_dir=tmp_path,
                      state_file=tmp_path / "state.json")


def test_runner_resumes_after_finished_notebooks(tmp_path, monkeypatch, capsys):
    from helpers.notebooks import run_notebooks

    monkeypatch.setenv("CXR_MODE", "smoke")
    monkeypatch.setenv("CXR_SMOKE", "1")
    _notebook(tmp_path, "01_ok.ipynb", "from ipykernel.kernelapp import IPKernelApp\n"
                                       "print(IPKernelApp.instance().transport)")
    _notebook(tmp_path, "02_fails.ipynb", "raise ValueError('boom')")
    kw = dict(notebook_dir=tmp_path, state_file=tmp_path / "state.json", timeout=60)
    with pytest.raises(RuntimeError, match="02_fails.ipynb: cell 0.*boom"):
        run_notebooks(tmp_path / "out", "smoke", **kw)
    _notebook(tmp_path, "02_fails.ipynb", "print('fixed')")
    written = run_notebooks(tmp_path / "out", "smoke", **kw)  # 01 finished: not run again
    assert [p.name for p in written] == ["02_fails.ipynb"]
    assert "01_ok.ipynb: finished before, skipped" in capsys.readouterr().out
    assert run_notebooks(tmp_path / "out", "smoke", **kw) == []
    ran = nbformat.read(tmp_path / "out" / "01_ok.ipynb", as_version=4)
    assert ran.cells[0].outputs[0]["text"] == "ipc\n"  # no TCP port race between kernels
    assert len(run_notebooks(tmp_path / "out", "smoke", restart=True, **kw)) == 2


def test_sliced_get_msg_asks_again_until_the_message_or_the_deadline():
    import asyncio
    from queue import Empty

    from helpers.notebooks import sliced_get_msg

    asked = []

    async def late(timeout=None):  # the message is there on the third look
        asked.append(timeout)
        if len(asked) < 3:
            raise Empty
        return {"msg_type": "execute_reply"}

    assert asyncio.run(sliced_get_msg(late, step=0.01)(timeout=None)) == {"msg_type": "execute_reply"}
    assert asked == [0.01, 0.01, 0.01]  # no single long wait

    def never(timeout=None):  # a synchronous channel works too
        raise Empty

    with pytest.raises(Empty):
        asyncio.run(sliced_get_msg(never, step=0.01)(timeout=0.05))
