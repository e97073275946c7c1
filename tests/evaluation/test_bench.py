"""The benchmark (helpers/evaluation/bench.py), on its one tiny part: the data loading."""
from __future__ import annotations

import pytest

from helpers.__main__ import build_parser
from helpers.evaluation.bench import run_bench


def test_bench_times_the_parts_asked_for(tmp_path, capsys):
    table = run_bench(device="cpu", workdir=tmp_path, parts=["loading"], n_images=8)
    assert list(table["measurement"]) == [
        "data loading + augmentation, straightforward (PIL/item)", "data loading + augmentation, ours (cache)",
        "data loading + augmentation + place training, ours", "data loading, ours / straightforward"]
    assert (table["value"] > 0).all() and list(table["unit"]) == ["images/s"] * 3 + ["ratio"]
    # the text methods of the defaults, from the registry
    assert table["note"].iloc[2] == "null 0.15, paste 0.5, swap 0.1, sentence 0.15"
    assert "text encoder:" not in capsys.readouterr().out  # no text model for this part
    with pytest.raises(ValueError, match=r"unknown bench part\(s\) \['gpu'\]; the parts: loading, phase2"):
        run_bench(parts=["gpu"])
    assert build_parser().parse_args(["bench", "--parts", "loading", "phase1"]).parts == ["loading", "phase1"]
