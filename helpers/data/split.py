"""Splitting the labeled cases into train / validation / test by patient (`uid`), seeded and saved;
the split a model carries (`split_keys`) and which of its splits given cases belong to."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from ..core.layout import PATIENT_SPLITS_CSV, SPLITS, DatasetError


def split_cases(cases: pd.DataFrame, out_csv: str | Path | None = None, *, val_fraction: float = 0.15,
                test_fraction: float = 0.15, seed: int = 42,
                fixed: pd.Series | None = None) -> pd.DataFrame:
    """A copy of `cases` with a `split` column ("train" / "val" / "test"), grouped by patient (`uid`).

    The test set is drawn first, then validation from the rest; fractions count patients (one case
    each in the demo). Each split gets at least one patient. With `out_csv`, a saved split (columns
    case_id, uid, split) holding exactly the same case_ids is reused as saved; otherwise the split is
    rebuilt and written there. `fixed` (uid -> split, from the dataset's `patient_splits.csv`)
    replaces the drawing: every case takes its patient's split.
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 < val_fraction, test_fraction and their sum < 1, got "
                         f"{val_fraction=}, {test_fraction=}")
    if cases["uid"].nunique() < 3:
        raise DatasetError(f"only {cases['uid'].nunique()} patient(s) with masks; a train/val/test "
                           f"split needs at least 3 - add masks to masked/")
    out_csv = Path(out_csv) if out_csv is not None else None
    if fixed is not None:
        result = cases.assign(split=_fixed_split(cases, fixed))
    else:
        saved = _saved_split(out_csv, cases)
        if saved is not None:
            return cases.assign(split=cases["case_id"].map(saved).to_numpy())
        result = cases.assign(split=_group_split(cases["uid"].to_numpy(), val_fraction,
                                                 test_fraction, seed))
    if out_csv is not None:
        if out_csv.exists() and fixed is None:
            print(f"{out_csv}: the cases changed; split rebuilt and overwritten")
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        result[["case_id", "uid", "split"]].to_csv(out_csv, index=False)
    return result


def _saved_split(out_csv: Path | None, cases: pd.DataFrame) -> pd.Series | None:
    """case_id -> split from `out_csv` when it holds exactly the cases' ids, else None."""
    if out_csv is None or not out_csv.is_file():
        return None
    try:
        saved = pd.read_csv(out_csv, dtype={"case_id": str, "split": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None
    if not {"case_id", "split"} <= set(saved.columns) or saved["case_id"].duplicated().any():
        return None
    if set(saved["case_id"]) != set(cases["case_id"].astype(str)):
        return None
    return saved.set_index("case_id")["split"]


def _group_split(uids: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """str array [N] of split names; no uid in two splits."""
    index = np.arange(len(uids))
    test_split = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    rest, test = next(test_split.split(index, groups=uids))
    val_split = GroupShuffleSplit(n_splits=1, test_size=val_fraction / (1 - test_fraction),
                                  random_state=seed)
    _, val = next(val_split.split(rest, groups=uids[rest]))
    split = np.full(len(uids), "train", dtype=object)
    split[test] = "test"
    split[rest[val]] = "val"
    return split


def read_patient_splits(path: str | Path) -> pd.Series:
    """uid (int) -> split from a `patient_splits.csv` (`uid, split`); DatasetError naming the file
    when it is malformed."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read it as a CSV ({err}); fix or delete it") from err
    if not {"uid", "split"} <= set(frame.columns):
        raise DatasetError(f"{path}: needs columns uid, split (found {', '.join(frame.columns)}); fix "
                           "or delete it")
    uids = pd.to_numeric(frame["uid"].str.strip(), errors="coerce")
    splits = frame["split"].str.strip().str.lower()
    bad = frame[uids.isna() | ~splits.isin(SPLITS)]
    if len(bad):
        raise DatasetError(f"{path}: rows {bad.index[:3].tolist()} need an integer uid and a split in "
                           f"{SPLITS}; fix or delete them")
    if uids.duplicated().any():
        raise DatasetError(f"{path}: uid {uids[uids.duplicated()].iloc[0]:.0f} is listed twice")
    return pd.Series(splits.to_numpy(), index=uids.astype("int64").to_numpy(), name="split")


def _fixed_split(cases: pd.DataFrame, fixed: pd.Series) -> np.ndarray:
    missing = sorted(set(cases["uid"]) - set(fixed.index))
    if missing:
        raise DatasetError(f"{PATIENT_SPLITS_CSV} lists no split for uid(s) {missing[:5]}; add them or "
                           "delete the file to split at random")
    split = cases["uid"].map(fixed).to_numpy()
    absent = [name for name in SPLITS if name not in set(split)]
    if absent:
        raise DatasetError(f"{PATIENT_SPLITS_CSV} leaves the {absent} split(s) without a labeled case")
    return split


def case_keys(cases: pd.DataFrame) -> list[str]:
    """One key per case (`uid`, `image_path`, `text`): "<uid>:<8 hex digits>", the digits a hash of
    the image's file name and the case's text. The uid keeps it readable; the hash tells the same
    case of the same collection from a case of another collection that reuses the uid (the demo
    and the IU collection both number their patients from 1)."""
    return [f"{uid}:{hashlib.sha1(f'{Path(str(path)).name}|{text}'.encode()).hexdigest()[:8]}"
            for uid, path, text in zip(cases["uid"], cases["image_path"], cases["text"])]


def split_keys(cases: pd.DataFrame) -> dict[str, list[str]]:
    """The split a model carries: split name -> the sorted `case_keys` of its cases (column
    `split`), for every split present."""
    keys = pd.Series(case_keys(cases), index=cases.index)
    return {name: sorted(set(keys[cases["split"] == name])) for name in SPLITS
            if (cases["split"] == name).any()}


def model_split(cases: pd.DataFrame, keys: dict[str, list[str]]) -> pd.Series:
    """For each of `cases`, the split of the model (`keys`, from `split_keys`) it belonged to:
    "train", "val", "test", or None for a case the model never had (another collection, or a
    patient outside its split)."""
    where = {key: name for name, listed in keys.items() for key in listed}
    return pd.Series([where.get(k) for k in case_keys(cases)], index=cases.index, dtype=object)
