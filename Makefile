# bigimg: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# two test processes (a 2-core machine; each test file stays in one process)
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: demo test bench bench-quick scale lint clean install

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,bench,geo,cloud]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bigimg demo --out demo-output --overwrite $(DEMO_ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check bigimg tests benchmarks
	$(VENV)/bin/ruff format --check bigimg tests benchmarks
	$(VENV)/bin/mypy bigimg
	$(PY) -m pytest --doctest-modules bigimg -q -p no:cacheprovider
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

bench-quick: $(STAMP)
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f --quick || exit 1; done

scale: $(STAMP)
	$(PY) benchmarks/scale.py $(SCALE_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check bigimg tests benchmarks
	$(VENV)/bin/ruff format --check bigimg tests benchmarks

clean:
	rm -rf $(VENV) demo-output .pytest_cache
