"""Tests run in smoke mode: tiny data, tiny text model, one epoch. Notebook kernels inherit this."""
import os

os.environ.setdefault("CXR_SMOKE", "1")
os.environ.pop("CXR_MODE", None)
os.environ.setdefault("MPLBACKEND", "Agg")
