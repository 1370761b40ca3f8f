# Everything installs itself: uv (from PyPI, if missing), then the locked environment (uv.lock).
UV := python3 -m uv
# After `setup` has synced the locked environment: `uv run` would sync (and byte-compile) it again.
RUN := $(UV) run --no-sync

.PHONY: setup system-packages java demo test test-fast lint lint-sql dev bench clean report

setup: system-packages
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv>=0.9"
	$(UV) sync --frozen --extra spark
	@$(MAKE) --no-print-directory $(MANIFEST)

# The insight report's PDF and its tests: Debian's Chromium, a CJK font, pdftotext. Installed
# when missing and run as root (CI); otherwise say what to install.
SYSTEM_PACKAGES := chromium fonts-noto-cjk poppler-utils
system-packages:
	@if ! command -v chromium >/dev/null || ! command -v pdftotext >/dev/null || ! fc-list :lang=zh 2>/dev/null | grep -q .; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			(apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null 2>&1 || \
			 (apt-get update -qq && apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES))); \
		else echo "note: the report's PDF needs: apt-get install $(SYSTEM_PACKAGES)"; fi; \
	fi

# The Spark engine and its tests (docs/spark.md) need Java 17 or newer: installed when missing and
# run as root (CI), else a clear message before the tests start.
java:
	@if ! java -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])'; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			(apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null 2>&1 || \
			 (apt-get update -qq && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless)); \
		else echo "error: the Spark engine and its tests need Java 17+: apt-get install openjdk-17-jre-headless" >&2; exit 1; fi; \
	fi

# dbt's manifest, parsed again only when a file it is made from is newer (a parse costs seconds),
# the same files orchestration/dbt_assets.py:prepare_manifest checks.
MANIFEST := dbt_project/target/manifest.json
DBT_SOURCES := $(shell find dbt_project/models dbt_project/macros dbt_project/tests dbt_project/seeds -type f 2>/dev/null) \
	dbt_project/dbt_project.yml dbt_project/profiles.yml
$(MANIFEST): $(DBT_SOURCES)
	$(RUN) dbt parse --project-dir dbt_project --profiles-dir dbt_project --quiet

# Generate the sample extracts, then materialize every asset into warehouse/crm.duckdb; the run
# leaves the insight report in warehouse/reports/latest/.
demo: setup
	$(RUN) crm generate
	$(RUN) crm run --full-refresh

# On both cores (pytest-xdist): faster here than one process (docs/benchmark.md, "Test suite").
# A module's tests on one worker (loadscope): its module fixtures (the Spark parity builds, the
# daily runs) are then built once, not once per worker that gets one of its tests.
test: setup java
	$(RUN) pytest -n 2 --dist loadscope

# The quick tier: tests of pure logic and single components, no pipeline run (`slow` ones left
# out), on both cores (pytest-xdist): faster here than one process.
test-fast: setup
	$(RUN) pytest -m "not slow and not spark" -n 2

# ruff (lint and format), mypy on the plain-Python packages, sqlfluff on the dbt project.
lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	@$(MAKE) --no-print-directory lint-sql

# Against an empty warehouse, as on a fresh clone: with the demo's warehouse the dbt templater
# compiles the incremental branches, which the rules were never set for.
lint-sql: setup
	cd dbt_project && CRM_WAREHOUSE=$$(mktemp -d)/lint.duckdb $(RUN) sqlfluff lint models tests --processes 2

# The Dagster UI on http://127.0.0.1:3000 with this repo's dagster.yaml (history in .dagster/).
dev: setup
	$(RUN) crm dev

# The pipeline benchmark (bench/pipeline.py): SCALE=S (10k customers), M (100k) or L (1M).
SCALE ?= S
ENGINE ?= duckdb
bench: setup
	$(RUN) python bench/pipeline.py --scale $(SCALE) --engine $(ENGINE)

# Removes the demo's data and history; keeps warehouse/governance/ (audit log, suppression list, key).
clean:
	rm -rf warehouse/crm.duckdb warehouse/crm.duckdb.wal warehouse/crm.duckdb.tmp warehouse/crm.duckdb.tmp-splink \
		warehouse/sample warehouse/.duckdb_tmp .dagster \
		warehouse/published warehouse/exports warehouse/.exports.versions warehouse/exports_region \
		warehouse/audiences warehouse/reports
