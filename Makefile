# lumbar-d2: `make demo` (main job on the embedded phantom), `make lint` and `make test` all
# install first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.lumbar-installed

.PHONY: install demo lint test doctor clean

install: $(STAMP)

$(STAMP): setup.py tools/install_detectron2.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=77,<81" wheel
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python tools/install_detectron2.py
	$(BIN)/python -m lumbar_d2.doctor
	touch $(STAMP)

demo: install
	$(BIN)/python -m lumbar_d2.demo --output output/demo

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/python -m pytest -q tests

doctor: install
	$(BIN)/python -m lumbar_d2.doctor

clean:
	rm -rf output .pytest_cache
