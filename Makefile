# Evergreen: two commands on a fresh machine with Python 3.11.
#   make demo   set up .venv and run the main job on embedded defaults (all state under .evergreen/)
#   make test   set up .venv and run the whole test suite
#   make serve  serve the churn model's champion (and challenger) on http://127.0.0.1:8000 (embedded defaults)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export EVERGREEN_HOME ?= $(CURDIR)/.evergreen

.PHONY: venv test demo demo-ui airflow serve bench freeze clean reset compose-tools serve-tools bench-tools

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or: make PYTHON=/path/to/python3.11 ...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip==26.0.1"
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

test: $(STAMP) compose-tools serve-tools
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

# tests/test_compose.py validates docker-compose.yaml with Debian's docker-compose (`config` needs no Docker engine).
# Installed when missing and running as root (CI); elsewhere those tests skip and say how to install it.
compose-tools:
	@command -v docker-compose >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing docker-compose (Debian package) for tests/test_compose.py"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; \
	  else \
	    echo "docker-compose not found: tests/test_compose.py will skip (apt-get install docker-compose)"; \
	  fi; }

# tests/plugins/evergreen/serve/test_live.py scrapes the serving app with a real Prometheus (Debian's package; it
# is only run by the test, never as a service). Installed like docker-compose above; elsewhere that test skips.
serve-tools:
	@command -v prometheus >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing prometheus (Debian package) for tests/plugins/evergreen/serve/test_live.py"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  else \
	    echo "prometheus not found: the real-Prometheus serving test will skip (apt-get install prometheus)"; \
	  fi; }

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m evergreen_demo $(DEMO_ARGS)

# The demo's month in the UIs: Airflow on http://localhost:8080 (api-server only: nothing new runs) and MLflow on
# http://127.0.0.1:5000, on the history `make demo` left under EVERGREEN_HOME; Ctrl-C stops both.
demo-ui: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m evergreen_demo --ui

# Airflow's UI on http://localhost:8080 with the project's DAGs; the admin password is printed at start and kept
# in .evergreen/airflow/simple_auth_manager_passwords.json.generated.
# The evergreen_registry pool (one slot) serializes every registry move: promote, ab_analysis and rollback use it.
airflow: $(STAMP)
	eval "$$($(BIN)/python -m evergreen.airflow_env)" && export PATH="$(CURDIR)/$(BIN):$$PATH" && \
	  airflow db migrate >/dev/null && \
	  airflow pools set evergreen_registry 1 "Evergreen registry moves, one at a time" >/dev/null && \
	  airflow standalone

# The serving app for one model (SERVE_ARGS, e.g. SERVE_ARGS="--model churn --port 8001"), on the embedded
# registry and store under EVERGREEN_HOME: it serves once promote_churn has set the champion alias (make airflow).
SERVE_ARGS ?= --model churn --host 127.0.0.1 --port 8000
serve: $(STAMP)
	eval "$$($(BIN)/python -m evergreen.airflow_env)" && PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m evergreen.serve $(SERVE_ARGS)

# bench/serving.py drives its load with Debian's wrk; installed like docker-compose above when missing.
bench-tools:
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else \
	    echo "wrk not found: bench/serving.py will stop and say so (apt-get install wrk)"; \
	  fi; }

bench: $(STAMP) bench-tools
	for b in bench/*.py; do PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python $$b || exit 1; done

freeze:
	rm -rf /tmp/evergreen-freeze && $(PYTHON) -m venv /tmp/evergreen-freeze
	/tmp/evergreen-freeze/bin/pip install -q -r requirements.in
	/tmp/evergreen-freeze/bin/pip freeze | grep -v '^-e' > requirements.txt

reset:
	rm -rf $(EVERGREEN_HOME)

clean: reset
	rm -rf $(VENV)
