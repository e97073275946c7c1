"""The split by patient (helpers/data/split.py): seeded, saved, reused, or fixed by the dataset."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.core.layout import DatasetError
from helpers.data.split import split_cases


def cases_frame(n_uids: int, per_uid: int = 1) -> pd.DataFrame:
    uids = np.repeat(np.arange(1, n_uids + 1), per_uid)
    return pd.DataFrame({"case_id": [f"c{i}" for i in range(len(uids))], "uid": uids})


def test_split_groups_by_uid_and_tiny_inputs_fill_every_split():
    split = split_cases(cases_frame(40, per_uid=3))
    assert split.groupby("uid")["split"].nunique().max() == 1
    counts = split["split"].value_counts()
    assert counts["test"] == 18 and counts["val"] == 18 and counts["train"] == 84
    tiny = split_cases(cases_frame(16))
    assert set(tiny["split"]) == {"train", "val", "test"}
    assert (split_cases(cases_frame(16))["split"] == tiny["split"]).all()  # seeded
    with pytest.raises(DatasetError, match="at least 3"):
        split_cases(cases_frame(2))


def test_split_is_reused_when_present_and_rebuilt_when_cases_change(tmp_path, capsys):
    out = tmp_path / "splits.csv"
    cases = cases_frame(20)
    first = split_cases(cases, out)
    saved = pd.read_csv(out)
    assert saved.columns.tolist() == ["case_id", "uid", "split"]
    saved["split"] = "train"  # a hand-edited split is returned as saved
    saved.loc[0, "split"] = "test"
    saved.to_csv(out, index=False)
    reused = split_cases(cases, out)
    assert reused["split"].tolist() == saved["split"].tolist()
    assert capsys.readouterr().out == ""
    rebuilt = split_cases(cases.iloc[:-1], out)
    assert "rebuilt" in capsys.readouterr().out
    assert set(rebuilt["split"]) == {"train", "val", "test"}
    written = pd.read_csv(out)
    assert written[["case_id", "split"]].values.tolist() == rebuilt[["case_id", "split"]].values.tolist()
    assert set(first["split"]) == {"train", "val", "test"}


def test_fixed_patient_split_wins_and_is_saved(tmp_path):
    fixed = pd.Series({1: "test", 2: "val", 3: "train", 4: "train"})
    out = tmp_path / "splits.csv"
    split_cases(cases_frame(4), out)  # a random split saved earlier
    result = split_cases(cases_frame(4, per_uid=2), out, fixed=fixed)
    assert result.groupby("uid")["split"].first().to_dict() == fixed.to_dict()
    assert pd.read_csv(out)["split"].tolist() == result["split"].tolist()
    with pytest.raises(DatasetError, match=r"no split for uid\(s\) \[5\]"):
        split_cases(cases_frame(5), fixed=fixed)
    with pytest.raises(DatasetError, match="without a labeled case"):
        split_cases(cases_frame(4), fixed=fixed.replace("val", "train"))


@pytest.mark.parametrize("content, message", [
    ("uid,fold\n1,test\n", "needs columns uid, split"),
    ("uid,split\n1,holdout\n", "integer uid and a split"),
    ("uid,split\nx,test\n", "integer uid and a split"),
    ("uid,split\n1,test\n1,val\n", "listed twice"),
])
def test_patient_splits_file_errors_name_the_file(tmp_path, content, message):
    from helpers.data.split import read_patient_splits

    path = tmp_path / "patient_splits.csv"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message) as err:
        read_patient_splits(path)
    assert str(path) in str(err.value)


def test_demo_catalog_carries_its_fixed_split(catalog):
    assert catalog.patient_splits is not None
    assert set(catalog.cases["uid"]) <= set(catalog.patient_splits.index)
