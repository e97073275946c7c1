"""The headless notebook runner (helpers/notebooks.py): timeouts, resume, the kernel's messages."""
from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook


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
