# `make run` starts the hub; `make test` runs every test. Both create .venv and
# install the core and the bundled plugins, each as its own distribution.
PYTHON ?= python3
VENV ?= .venv
PORT ?= 8000
# The suite mostly waits on loopback servers: processes running test files side by side.
TEST_WORKERS ?= 2
BIN := $(VENV)/bin
PLUGINS := $(wildcard plugins/*/pyproject.toml)

.PHONY: run test install bench clean

$(BIN)/.installed: pyproject.toml $(PLUGINS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]' $(foreach p,$(PLUGINS),-e '$(patsubst %/pyproject.toml,%,$(p))[test]')
	touch $@

install: $(BIN)/.installed

run: $(BIN)/.installed
	$(BIN)/hub serve --port $(PORT)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: $(BIN)/.installed
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV)
