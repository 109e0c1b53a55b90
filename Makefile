# Two commands do all the set-up on a fresh machine:
#   make demo   - install retouch in .venv and erase the shuttle from the astronaut photo (out/)
#   make test   - install the test tools and run lint, format check, type check and the suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.demo: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[samples]"
	touch $@

# torch==2.13.0 first: that pin takes the CPU wheel on local disk; any other spec would pull
# several GB of CUDA packages. The diffusion extra's torch>=2.1 is then already satisfied.
# The studio's browser tests drive Debian's chromium (Playwright's own download is not used).
$(VENV)/.dev: $(BIN)/python pyproject.toml
	command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev,ray]"
	touch $@

demo: $(VENV)/.demo
	$(BIN)/python -m retouch.demo out

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache
