# Two commands a newcomer runs: `make demo` and `make test`. Both set up .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-stamp
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test test-heavy test-docs lint typecheck bench bench-serve clean

$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --progress-bar off -r requirements-dev.txt 2> >(grep -v "^WARNING: Location" >&2)
	$(PIP) install --quiet --progress-bar off --no-deps -r requirements-nodeps.txt 2> >(grep -v "^WARNING: Location" >&2)
	$(PIP) install --quiet --progress-bar off --no-deps -e . 2> >(grep -v "^WARNING: Location" >&2)
	@# Fashion-MNIST sample data (Debian package); skipped where apt-get is unavailable or not root.
	-@test -d /usr/share/datasets/fashion-mnist || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } || echo "note: dataset-fashion-mnist not installed (apt-get install dataset-fashion-mnist)"
	@# Chromium for the browser tests of the web pages (tests/web, driven by playwright; never `playwright install`).
	-@test -x /usr/bin/chromium || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get install -y -qq chromium >/dev/null 2>&1; } || echo "note: chromium not installed (apt-get install chromium)"
	@# promtool (Debian's prometheus package), for the metrics check of tests/engine/test_clients.py.
	-@command -v promtool >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get install -y -qq prometheus >/dev/null 2>&1; } || echo "note: promtool not installed (apt-get install prometheus)"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/aiforge demo
	$(VENV)/bin/aiforge chat-demo
	$(VENV)/bin/aiforge drive-demo

lint: install
	$(VENV)/bin/ruff check src tests bench

typecheck: install
	$(VENV)/bin/mypy

test: lint typecheck
	$(PY) -m pytest -q -ra --durations=15 -m "not docs and not heavy"

# The end-to-end runs of about 40 s or more each on 2 cores (the local LLM exported and served, Ray's
# HAProxy ingress, the demos, a Ray node killed): outside make test's 20 minutes; CI runs them after it.
test-heavy: install
	$(PY) -m pytest -q -ra --durations=15 -m heavy

# Every command block of README.md and docs/*.md, pasted in order on a fresh AIFORGE_HOME (~12 min on
# 2 cores: it trains each example); CI runs it after `make test`.
test-docs: install
	$(PY) -m pytest -q -ra -s -m docs tests/engine/test_docs_commands.py

bench: install
	$(PY) bench/banking77.py
	$(PY) bench/export.py

# Recommendation benchmark: MovieLens accuracy vs implicit, cold start, re-ranking, serving, scaling.
bench-recommend: install
	$(PY) bench/recommend.py

# Bench-only environment with the baselines' servers (bentoml); never a project dependency.
bench/.venv/.installed-stamp: requirements.txt bench/requirements-bench.txt
	test -x bench/.venv/bin/python || $(PYTHON) -m venv bench/.venv
	bench/.venv/bin/pip install --quiet --progress-bar off -r bench/requirements-bench.txt 2> >(grep -v "^WARNING: Location" >&2)
	bench/.venv/bin/pip install --quiet --progress-bar off --no-deps -e . 2> >(grep -v "^WARNING: Location" >&2)
	touch $@

bench-serve: bench/.venv/.installed-stamp
	bench/.venv/bin/python bench/serve.py

# Web pages: page weight and time to first render of the home page -> bench/results/web.json
.PHONY: bench-web
bench-web: install
	$(PY) bench/web.py

# Adult fairness benchmark (issue 4): accuracy and DP difference per mitigation -> bench/results/fairness.json
.PHONY: bench-fairness
bench-fairness: install
	$(PY) bench/fairness.py

# Driving (issue 13): random, expert, SB3 DQN, aiforge +- shield in closed loop; served act latency.
.PHONY: bench-driving
bench-driving: install
	nice $(PY) bench/driving.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache

# Chat assistant: the docs-assistant demo (offline, extractive) and its benchmark.
.PHONY: demo-chat bench-chat
demo-chat: install
	$(VENV)/bin/aiforge chat-demo

bench-chat: install
	$(PY) bench/chat.py

# Image recognition: Fashion-MNIST head mode, zero-shot photos, serving vs a PyTorch eager endpoint.
# Full mode on a GPU machine: python bench/vision.py --only full --device cuda (see docs/vision.md).
.PHONY: bench-vision
bench-vision: install
	$(PY) bench/vision.py --only head,zeroshot,serve
