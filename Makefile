# Two entry points: `make run` (the whole system, embedded defaults) and `make test`.
# Each installs what is missing first: a virtualenv, the pinned project, contracts' npm packages.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Slither pins web3<8, so it lives in a tool venv of its own, apart from the app's web3 8.
TOOLS := .venv-tools
CONTRACTS := contracts
ARTIFACTS := $(CONTRACTS)/build/AuditAnchor.json

.PHONY: run test install-run install-test contracts clean

run: install-run $(ARTIFACTS)
	$(BIN)/carrack-stack run

test: install-test $(TOOLS)/.installed $(ARTIFACTS)
	SLITHER=$(abspath $(TOOLS))/bin/slither $(BIN)/carrack-stack test

install-run: $(VENV)/.installed-run
install-test: $(VENV)/.installed-test
contracts: $(ARTIFACTS)

$(VENV)/.installed-run: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required" if sys.version_info < (3, 11) else 0)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

$(TOOLS)/.installed: constraints-tools.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints-tools.txt slither-analyzer==0.11.6
	touch $@

$(CONTRACTS)/node_modules/.installed: $(CONTRACTS)/package-lock.json
	cd $(CONTRACTS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(ARTIFACTS): $(CONTRACTS)/node_modules/.installed $(wildcard $(CONTRACTS)/*.sol) $(CONTRACTS)/scripts/compile.js
	cd $(CONTRACTS) && npm run --silent compile

clean:
	rm -rf $(VENV) $(TOOLS) $(CONTRACTS)/node_modules $(CONTRACTS)/build $(CONTRACTS)/out $(CONTRACTS)/cache
