# Set-up and the two commands of the README. Every target is idempotent: a second run redoes nothing
# that is finished (the venv is stamped, the model cache is checksummed, the demo reuses its run).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

export HF_HUB_OFFLINE := 1
export WANDB_MODE := disabled

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install model chromium app clean-venv

## make demo: set up, fetch SmolLM2, run the main job (the `sinks` experiment's claims table), open the dashboard.
demo: model
	-$(BIN)/interp run sinks --reuse
	$(BIN)/interp app $(APP_ARGS)

## make test: set up, fetch SmolLM2, install chromium (the dashboard's browser test), run the whole test suite.
test: model chromium
	$(BIN)/python -m pytest

## make app: the dashboard on http://127.0.0.1:8501 over the runs in ./runs (APP_ARGS="--port 8600" to change).
## It never asks anything: headless, no usage statistics, a browser opened only where one can be shown.
app: model
	$(BIN)/interp app $(APP_ARGS)

# Debian's chromium, driven headless by the dashboard's browser test (Playwright, no browser download).
chromium:
	@command -v chromium >/dev/null || $(SUDO) apt-get install -y chromium || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }

install: $(STAMP)

# torch first and pinned to the local CPU wheel: a looser spec would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Checks the cached weights' checksums (a second); fetches and converts them only when missing or corrupt.
model: install
	$(BIN)/interp fetch smollm2-135m

clean-venv:
	rm -rf $(VENV)
