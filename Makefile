# `make demo`: the whole pipeline on the generated demo dataset (CPU, minutes) -> runs/demo/
# `make test`: unit tests and every notebook under nbval in smoke mode.
# Both create or update .venv and install the requirements first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m helpers notebooks --mode demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf runs data/demo data/smoke data/text-models
