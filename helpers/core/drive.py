"""The run folder on Drive: training writes on the machine's own disk and copies its files to the
run folder at most every ~10 minutes and at the end; what is written there is counted.

Why: on Colab the run folder lives on Google Drive, and a file replaced or deleted through the
mount goes to Drive's trash, where it keeps counting against the quota (15 GB on a free account,
shared with mail and photos) until the trash is emptied. A `best_model.pth` of ~100 MB rewritten
at every better epoch, or a `last.pth` of ~300 MB every few minutes, would fill it. So a training
whose folder is on Drive writes into a local work folder (`local_work_dir`), and a `Mirror` copies
each changed file to the run folder when `last.pth` is written (at most every `CXR_LAST_SAVE_S`,
default 600 s) and at the end: one copy per file, written beside it and renamed over the old one,
the best checkpoint before `last.pth` so that the pair on Drive always belongs together. A
disconnect loses at most what was trained since the last copy. Elsewhere the work folder is the
run folder itself and nothing is copied.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

from . import distributed as dist
from .environment import DRIVE_MOUNT, on_colab
from .layout import LAST_FILE, PREVIOUS_LAST_FILE, RUN_SETTINGS_FILE, history_file

WORK_ENV = "CXR_WORK_DIR"  # a local folder for the work folders, also off Colab (tests, other mounts)
COLAB_WORK_ROOT = Path("/content/cxr-work")  # on Colab's local disk, gone with the machine
WRITTEN: Counter = Counter()  # what this process wrote into run folders, bytes by kind
WRITTEN_KEY = "bytes_written"  # run.json: the same, summed over every notebook of the series


def local_work_dir(out_dir: str | Path, colab: bool | None = None) -> Path | None:
    """The folder on this machine's disk where a training whose files belong in `out_dir` writes
    them first, or None when it writes in `out_dir` itself: on Colab for a folder on the Drive
    mount (`/content/cxr-work/<its path under the mount>`); wherever `CXR_WORK_DIR` is set, under
    that folder (unless `out_dir` is already there)."""
    out = Path(out_dir).absolute()
    if os.environ.get(WORK_ENV):
        root = Path(os.environ[WORK_ENV]).absolute()
        if out.is_relative_to(root):
            return None
        return root / f"{out.name}-{hashlib.sha1(str(out).encode()).hexdigest()[:10]}"
    colab = on_colab() if colab is None else colab
    if colab and out.is_relative_to(DRIVE_MOUNT):
        return COLAB_WORK_ROOT / out.relative_to(DRIVE_MOUNT)
    return None


def count_written(folder: str | Path, nbytes: int, kind: str) -> None:
    """Add `nbytes` written into `folder` (in a run folder) to this process's count and to the
    series' count in the run folder's `run.json` (the nearest folder above that holds one)."""
    if nbytes <= 0:
        return
    WRITTEN[kind] += nbytes
    folder = Path(folder).absolute()
    run_json = next((p / RUN_SETTINGS_FILE for p in [folder, *folder.parents][:4]
                     if (p / RUN_SETTINGS_FILE).is_file()), None)
    if run_json is None or not dist.is_main():
        return
    try:
        record = json.loads(run_json.read_text())
    except (OSError, ValueError):
        return
    written = record.setdefault(WRITTEN_KEY, {})
    written[kind] = int(written.get(kind, 0)) + int(nbytes)
    tmp = run_json.with_name(run_json.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, run_json)


def written_text(record: dict | None = None) -> str:
    """'0.60 GB (checkpoints 100.0 MB, image cache 0.50 GB)' of this process, or of a run.json
    record's `bytes_written`."""
    counts = WRITTEN if record is None else record.get(WRITTEN_KEY, {})

    def size(n: int) -> str:
        return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"

    parts = ", ".join(f"{kind} {size(n)}" for kind, n in sorted(counts.items()))
    return size(sum(counts.values())) + (f" ({parts})" if parts else "")


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


class Mirror:
    """The files `names` of one training, written in `work` (this machine's disk) and copied to
    `out` (the run folder) by `push`, in the order of `names` (the best checkpoint first). Where
    no copy is needed (`local_work_dir` is None), `work` is `out` and `pull` / `push` do nothing.

    `renamed` maps a name the training may give a pulled file to its old name (`last.prev.pth`:
    a `last.pth` of other settings, set aside): the run folder's file is renamed too, not copied.
    """

    def __init__(self, out: str | Path, names: Sequence[str], renamed: dict[str, str] | None = None):
        self.out = Path(out)
        local = local_work_dir(self.out)
        self.copies = local is not None
        self.work = local if local is not None else self.out
        self.names, self.renamed = list(names), dict(renamed or {})
        self.pushes: Counter = Counter()  # name -> copies made to the run folder
        self._sent: dict[str, tuple | None] = {}  # name -> stamp of the work file last copied

    @classmethod
    def for_training(cls, out: str | Path, best_name: str, resume: bool) -> Mirror:
        """The mirror of a training's best checkpoint, `last.pth` and history, pulled."""
        mirror = cls(out, [best_name, LAST_FILE, history_file(best_name)],
                     renamed={PREVIOUS_LAST_FILE: LAST_FILE})
        mirror.pull(resume)
        return mirror

    def pull(self, files: bool = True) -> None:
        """Start the work folder from the run folder (a new machine has nothing local): the
        earlier files there removed, the run folder's copied in when `files` (to resume)."""
        if self.copies and dist.is_main():
            self.work.mkdir(parents=True, exist_ok=True)
            for name in self.names:
                (self.work / name).unlink(missing_ok=True)
                if files and (self.out / name).is_file():
                    shutil.copy2(self.out / name, self.work / name)
                self._sent[name] = _stamp(self.work / name)
        dist.barrier()

    def after_epoch(self, then: Callable[[dict], None] | None = None) -> Callable[[dict], None]:
        """An `on_epoch_end` for `fit`: a push when the epoch wrote `last.pth` (at most every
        `CXR_LAST_SAVE_S`), then `then(row)`."""
        def hook(row: dict) -> None:
            if self.copies and _stamp(self.work / LAST_FILE) != self._sent.get(LAST_FILE):
                self.push()
            if then is not None:
                then(row)
        return hook

    def push(self) -> int:
        """Copy each file changed since its last copy to the run folder (to `<name>.tmp` there,
        renamed over the old file); returns the bytes written."""
        if not self.copies or not dist.is_main():
            return 0
        self.out.mkdir(parents=True, exist_ok=True)
        for new, old in self.renamed.items():
            if (self.work / new).is_file() and _stamp(self.work / new) == self._sent.get(old) \
                    and (self.out / old).is_file():
                os.replace(self.out / old, self.out / new)
                self._sent[old] = None
        written = 0
        for name in self.names:
            source, stamp = self.work / name, _stamp(self.work / name)
            if stamp is None or stamp == self._sent.get(name):
                continue
            tmp = self.out / (name + ".tmp")
            shutil.copyfile(source, tmp)
            os.replace(tmp, self.out / name)
            self._sent[name], written = stamp, written + stamp[0]
            self.pushes[name] += 1
        count_written(self.out, written, "checkpoints")
        return written

    def in_run_folder(self, path: Path) -> Path:
        """Where the work folder's file `path` lies in the run folder."""
        return self.out / Path(path).relative_to(self.work) if self.copies else Path(path)
