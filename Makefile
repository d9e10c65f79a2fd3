# A fresh clone needs only `make run` and `make test`: both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

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

# nginx runs in front of a node in the X-Accel-Redirect tests (tests/nginxserver.py);
# clamd scans content in the malware-scanning tests (tests/clamdserver.py); Chromium shows
# the agent's page to Playwright (tests/e2e/ui_browser.py); tus-js-client (tests/e2e/node,
# from npm) uploads in the tus tests.
test: lint
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive \
		  apt-get install -y -q --no-install-recommends nginx; }
	@command -v clamd >/dev/null 2>&1 || test -x /usr/sbin/clamd || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive \
		  apt-get install -y -q --no-install-recommends clamav-daemon; }
	@test -x /usr/bin/chromium || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	@test -d tests/e2e/node/node_modules -a ! tests/e2e/node/node_modules -ot tests/e2e/node/package-lock.json || \
		npm ci --prefix tests/e2e/node --no-audit --no-fund --loglevel=error
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/run.py --peers chatmedia --only W2,W3 --runs 3 --chatmedia-workers 2
	$(BIN)/python bench/transfer.py
	$(BIN)/python bench/ceilings.py
	$(BIN)/python bench/limits_ab.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/scanning.py
	$(BIN)/python bench/media.py
	$(BIN)/python bench/tus.py
	$(BIN)/python bench/tus_ceilings.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
