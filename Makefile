# Two entry points: `make run` (the service on its embedded defaults) and `make test` (the whole suite).
# Each one sets up everything it needs first (scripts/bootstrap.sh).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench setup setup-test clean console-screenshots cluster

setup:
	@scripts/bootstrap.sh

setup-test:
	@scripts/bootstrap.sh --test

run: setup
	$(BIN)/retail-policy serve --demo

lint: setup-test
	$(BIN)/ruff check service simulators tests
	$(BIN)/ruff format --check service simulators tests
	$(BIN)/mypy --strict service simulators

# two worker processes (pytest-xdist); each is a test session of its own, with its own Redis database and
# PostgreSQL databases
test: lint
	$(BIN)/python -m pytest -q -n 2

# the screenshots of docs/console.md, taken by the console's browser journeys
console-screenshots: setup-test
	CONSOLE_SCREENSHOTS=1 $(BIN)/python -m pytest -q -m browser tests/console

bench: setup-test
	$(BIN)/python -m pytest tests/benchmarks -o python_files='bench_*.py' -s -q

# the local three-primary Redis Cluster the tests start (tests/redis_cluster.py), until Ctrl-C
cluster: setup-test
	$(BIN)/python -m tests.redis_cluster

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
