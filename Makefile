# The two commands of the README. Both start from a fresh machine: they create the virtualenv,
# install the package, and (through `billing stack up` / the test fixtures) fetch the Kafka jars
# with Maven and install Debian's clickhouse-server when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: setup demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

## demo: start the local stack and run the pipeline end to end on the embedded ClickHouse (chdb)
demo: setup
	$(BIN)/billing stack up --no-clickhouse
	$(BIN)/billing demo

## test: lint (ruff, import-linter layer contracts), then the whole suite (unit, property, and integration against real Kafka + ClickHouse)
test: setup lint
	$(BIN)/pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	-$(BIN)/billing stack down
	rm -rf $(VENV) var
