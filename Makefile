# Every target creates .venv on first use and installs the project into it, so a fresh clone needs only
# Python 3.11+ and make.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The bench-only dependencies (pyproject's `bench` extra), installed by `make bench` alone.
BENCH_STAMP := $(VENV)/.installed-bench

.DEFAULT_GOAL := help
.PHONY: help venv test test-fast lint typecheck check demo serve token migrate compliance bench mutants openapi db-url db-stop clean audit-verify

help:
	@echo "make demo        boot everything locally and walk through real flows"
	@echo "make test        lint, type-check and run the whole test suite"
	@echo "make serve       run the local stack (API on 127.0.0.1:8080)"
	@echo "make token       print a dev JWT (TENANT=<uuid> [SUB=<user>] [SCOPE=auditor])"
	@echo "make migrate     apply sql/ migrations to DATABASE_URL or the embedded database"
	@echo "make compliance  run the workflow write compliance check"
	@echo "make bench       run the benchmarks in bench/"
	@echo "make audit-verify recompute the audit tree and check every checkpoint (KEY_RING=<file> [BUCKET=<name>])"
	@echo "make mutants     remove guards one at a time and check the suite notices (ONLY=<text>)"
	@echo "make openapi     regenerate docs/openapi.json from the code"
	@echo "make synth       synthesize the CDK app offline (STAGE=prod, SKIP_LAYER_DEPS=1)"
	@echo "make db-stop     stop the embedded PostgreSQL"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found %s); set PYTHON=python3.x" % sys.version.split()[0])'
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	@$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy layers/shared/python/billing functions infra bench scripts tests

# In parallel, one worker per core: test ids are deterministic and every test brings its own tenant or database.
# Modules stay whole on one worker (loadscope), so a module's stack or synthesized app is built once.
test: check-node lint typecheck
	$(PY) -m pytest -q -n auto --dist loadscope

test-fast: $(STAMP)
	$(PY) -m pytest -q -x tests/unit

demo: $(STAMP)
	$(PY) scripts/demo.py

serve: $(STAMP)
	$(PY) scripts/serve.py

token: $(STAMP)
	@$(PY) scripts/issue_token.py $(if $(TENANT),--tenant $(TENANT)) $(if $(SUB),--sub $(SUB)) $(if $(SCOPE),--scope "$(SCOPE)")

migrate: $(STAMP)
	$(PY) -m billing.db.migrations

compliance: migrate
	$(PY) -m billing.workflow_compliance

bench: $(BENCH_STAMP)
	$(PY) bench/lifecycle_throughput.py
	$(PY) bench/cold_start_imports.py
	$(PY) bench/audit_append.py
	$(PY) bench/audited_instrument_reads.py
	$(PY) bench/stripe_adapter_overhead.py
	$(PY) bench/risk_assessment.py
	$(PY) bench/settlement_reconciliation.py
	$(PY) bench/relay_throughput.py

# Exit 1 and the first row that differs if the audit trail was changed. The key ring comes from Secrets Manager
# (the local stack's moto while `make serve` runs) unless KEY_RING names an exported ring.
audit-verify: $(STAMP)
	$(PY) -m billing.audit verify $(if $(KEY_RING),--key-ring-file $(KEY_RING)) $(if $(BUCKET),--bucket $(BUCKET))

mutants: $(STAMP)
	$(PY) scripts/mutants.py $(if $(ONLY),--only "$(ONLY)")

openapi: $(STAMP)
	$(PY) scripts/export_openapi.py

db-url: $(STAMP)
	@$(PY) -m billing.local.embedded_postgres url

db-stop: $(STAMP)
	$(PY) -m billing.local.embedded_postgres stop

clean:
	rm -rf $(VENV) .local cdk.out build .pytest_cache .mypy_cache .ruff_cache

# --- Infrastructure (AWS CDK) ------------------------------------------------------------------------------------
.PHONY: synth check-node

# The CDK's jsii runtime runs on Node.js: say so plainly instead of failing later with an obscure import error.
check-node:
	@command -v node >/dev/null 2>&1 || { echo "Node.js 20+ is required (the AWS CDK runs on it): install it from https://nodejs.org or your package manager" >&2; exit 1; }
	@node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || { echo "Node.js 20+ is required (the AWS CDK runs on it); found $$(node --version)" >&2; exit 1; }

# Synthesize one stage into cdk.out/, offline and without AWS credentials: make synth [STAGE=prod] [SKIP_LAYER_DEPS=1]
synth: check-node $(STAMP)
	@# jsii warns about every Node.js release it has not certified; the warning says nothing about this app.
	JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=$$(node -p "process.versions.node.split('.')[0]") $(PY) -m infra.app $(if $(STAGE),--stage $(STAGE)) $(if $(SKIP_LAYER_DEPS),-c skipLayerDependencies=true)
