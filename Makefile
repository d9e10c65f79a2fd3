# A fresh clone needs only `make run` and `make test`: both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The S3-compatible server the tests run against (PostgreSQL comes from Debian's packages).
TOOLS := .tools
S3RVER := $(TOOLS)/node_modules/.bin/s3rver

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@$(BIN)/python -c "import magic" 2>/dev/null || \
		{ echo "libmagic is missing: install Debian's libmagic1 (apt-get install libmagic1)"; exit 1; }
	touch $@

run: $(STAMP)
	$(BIN)/chatmedia serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

$(S3RVER):
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) s3rver@3.7.1

test: lint $(S3RVER)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/transfer.py
	$(BIN)/python bench/ceilings.py
	$(BIN)/python bench/limits_ab.py

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
