"""Phase-1 image lists: unlabeled sources beyond the IU layout, and the IU images Phase 1 may use.

Phase 1 needs only pixels, so any collection of chest X-rays serves (CheXpert, MIMIC-CXR, PadChest,
NIH ChestX-ray14: 20-50x the IU set). A source is a folder (searched recursively for PNG/JPEG), a
list file (`.txt`: one path a line; `.csv`: a `path` / `image` / `filename` / `file` column, or a
single column), or one image file. Relative entries of a list are read from the list's folder.
Entries that are missing or not PNG/JPEG are listed, skipped and counted, never fatal; files that
exist but cannot be decoded are caught later by the cache (`build_image_cache(...).failed`).

No leak of validation or test patients: `iu_pretrain_paths` leaves them out of Phase 1, `iu_patients`
names the patients a Phase-1 encoder saw (its record keeps them), and
`model.record.check_encoder_patients` refuses, before Phase 2 trains, an encoder that saw one of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..core.layout import DatasetError

UNLABELED_SUFFIXES = (".png", ".jpg", ".jpeg")
LIST_COLUMNS = ("path", "image", "filename", "file", "image_path")


@dataclass
class UnlabeledSources:
    """The images found in the sources: `paths` (absolute, de-duplicated, in source order),
    `skipped` (entry, reason) for entries that were not used, `counts` images per source."""

    paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def report(self, limit: int = 10) -> str:
        """A few lines for the console: images per source, then the skipped entries."""
        lines = [f"{source}: {n} image(s)" for source, n in self.counts.items()]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} entr(y/ies):")
            lines += [f"  {entry}: {why}" for entry, why in self.skipped[:limit]]
            if len(self.skipped) > limit:
                lines.append(f"  ... and {len(self.skipped) - limit} more")
        return "\n".join(lines)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in UNLABELED_SUFFIXES


def _folder_images(folder: Path) -> list[Path]:
    """Every PNG/JPEG under `folder` (recursively, hidden folders skipped), sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and _is_image(p)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _list_entries(path: Path) -> list[str]:
    """The path entries of a `.txt` or `.csv` list (header optional for a one-column CSV)."""
    if path.suffix.lower() == ".txt":
        lines = (line.strip() for line in path.read_text(errors="replace").splitlines())
        return [line for line in lines if line and not line.startswith("#")]
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read this CSV list of images ({err}); write one path "
                           "a line, or a CSV with a 'path' column") from err
    columns = {c.strip().lower(): c for c in frame.columns}
    for name in LIST_COLUMNS:
        if name in columns:
            return [v.strip() for v in frame[columns[name]] if v.strip()]
    if len(frame.columns) == 1:  # no header: the first line is a path too
        header = str(frame.columns[0]).strip()
        return [header] + [v.strip() for v in frame.iloc[:, 0] if v.strip()]
    raise DatasetError(f"{path}: no image column; expected one of {', '.join(LIST_COLUMNS)} "
                       f"(found {', '.join(map(str, frame.columns))})")


def list_unlabeled(sources: Sequence[str | Path]) -> UnlabeledSources:
    """Collect the images of several sources (folders, `.csv`/`.txt` lists, single images).

    Raises DatasetError naming the source when a source does not exist or is of an unknown kind,
    and when no source yields any image."""
    found = UnlabeledSources(paths=[])
    seen: set[str] = set()
    for source in sources:
        src = Path(source).expanduser()
        if not src.exists():
            raise DatasetError(f"{source}: not found; pass a folder of PNG/JPEG images, a .csv or "
                               ".txt list of image paths, or an image file")
        if src.is_dir():
            candidates = [(str(p), p) for p in _folder_images(src)]
        elif src.suffix.lower() in (".csv", ".txt"):
            candidates = [(entry, Path(entry) if Path(entry).is_absolute() else src.parent / entry)
                          for entry in _list_entries(src)]
        elif _is_image(src):
            candidates = [(str(source), src)]
        else:
            raise DatasetError(f"{source}: not a folder, a .csv/.txt list or a PNG/JPEG image")
        n = 0
        for entry, path in candidates:
            if not _is_image(path):
                found.skipped.append((entry, f"not a PNG/JPEG file (listed in {source})"))
            elif not path.is_file():
                found.skipped.append((entry, f"not found (listed in {source})"))
            elif (key := str(path.resolve())) not in seen:
                seen.add(key)
                found.paths.append(key)
                n += 1
        found.counts[str(source)] = n
    if not found.paths:
        raise DatasetError(f"No PNG/JPEG image in {', '.join(map(str, sources))}. "
                           + (found.report(3) if found.skipped else ""))
    return found


def iu_pretrain_paths(images: pd.DataFrame, cases: pd.DataFrame,
                      frontal_only: bool = False) -> list[str]:
    """The IU images Phase 1 may see: every image except those of the patients (`uid`) whose
    labeled cases are in the val or test split, so Phase 2 is never validated or tested on a
    patient that Phase 1 saw. `images`: the catalog's images (uid, projection, path); `cases`: the
    labeled cases with their `split`. Prints how many images were excluded."""
    if frontal_only:
        images = images[images["projection"] == "Frontal"]
    split = cases["split"] if "split" in cases else pd.Series(dtype=str)
    held_out = set(cases.loc[split.isin(["val", "test"]), "uid"])
    allowed = images[~images["uid"].isin(held_out)]
    if split.dropna().empty:  # no masks yet: no split, nothing to hold out
        print("No split yet (no labeled cases): Phase 1 sees every patient. The encoder records "
              "them, and Phase 2 refuses it once the masks define validation/test patients it saw: "
              "add the masks (MASKS_SOURCE) before Phase 1, or pretrain again after.")
    else:
        print(f"Phase 1 excludes {len(images) - len(allowed)} image(s) of {len(held_out)} val/test "
              f"patient(s): Phase 2's validation and test patients are never seen in Phase 1")
    return allowed["path"].tolist()


def iu_patients(images: pd.DataFrame, paths: Sequence[str]) -> list[int]:
    """The IU patients (`uid`, sorted) whose images are among `paths` (for `pretrain(patients=)`);
    `images`: the catalog's images (uid, path). Paths of other collections add none."""
    chosen = images[images["path"].isin(set(map(str, paths)))]
    return sorted({int(u) for u in chosen["uid"]})
