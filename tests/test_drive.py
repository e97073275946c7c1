"""The run folder on Drive: flushed after notebook 01, checkpoints copied there at most every ~10
minutes from the machine's disk, the bytes written counted."""
from __future__ import annotations

import sys
import types

from helpers import colab


def test_flush_drive_is_a_no_op_off_colab_and_flushes_on_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert "nothing to flush" in colab.flush_drive()
    calls = []
    fake = types.ModuleType("google.colab")
    fake.drive = types.SimpleNamespace(flush_and_unmount=lambda: calls.append("flushed"))
    monkeypatch.setitem(sys.modules, "google.colab", fake)
    assert "flushed and unmounted" in colab.flush_drive() and calls == ["flushed"]
