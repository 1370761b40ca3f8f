"""The Dagster layer for real: definitions, in-process materializations, checks, sensor, schedule, CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ingestion.generator import GeneratorConfig
from ingestion.sources import load_sources
from ml.tables import TABLES
from orchestration._compat.dagster_event_log import BatchingSqliteEventLogStorage
from orchestration.dbt_assets import DBT_DIR, STEPS, invocation_targets, parse_state
from orchestration.run import RunFailed, run_pipeline
from orchestration.settings import DBT_EXECUTABLE, DUCKDB_POOL, REPO_ROOT, Settings
from tests.conftest import ONLINE_RETAIL_SOURCES
from tests.test_dbt import INCREMENTAL, assert_same_rows, build_steps

pytestmark = pytest.mark.slow  # every test here runs the pipeline or reads its warehouse


@pytest.fixture
def definitions(sample_copy: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    monkeypatch.setenv("CRM_SOURCES", str(sample_copy[1]))
    from orchestration.definitions import defs

    return defs()


def test_definitions_expose_every_source_as_a_checked_asset(definitions: dg.Definitions) -> None:
    dg.Definitions.validate_loadable(definitions)
    specs = {tuple(s.key.path): s for s in definitions.resolve_all_asset_specs()}
    sources = {
        ("raw", n)
        for n in ("pos_receipt_lines", "web_events", "call_center_calls", "social_interactions", "customer_profiles")
    }
    channels = {("raw", c) for c in ("web", "store", "call_center", "social", "customers")}
    assert sources | channels <= set(specs)
    for key in sources | channels:
        assert specs[key].group_name == "ingestion"
        assert specs[key].metadata["dagster/table_name"] == ".".join(key)
    staging = specs[("staging", "stg_store__order_lines")]
    assert staging.group_name == "dbt" and dg.AssetKey(["raw", "store"]) in {d.asset_key for d in staging.deps}
    assets = definitions.resolve_assets_def(dg.AssetKey(["raw", "pos_receipt_lines"]))
    assert assets.op.pool == DUCKDB_POOL
    assert isinstance(assets.partitions_def, dg.DailyPartitionsDefinition)
    checks = {c.name: c.blocking for c in assets.check_specs}
    assert checks["keys_not_null"] and checks["quarantine_rate"] and not checks["row_count_positive"]
    assert definitions.resolve_schedule_def("ingest_daily").cron_schedule == "0 2 * * *"
    assert definitions.resolve_sensor_def("new_extract_files") is not None
    # Everything downstream of ingestion runs as its own unpartitioned job, started after ingestion.
    assert definitions.resolve_sensor_def("build_after_ingest") is not None
    build = definitions.resolve_job_def("build_warehouse")
    publish = definitions.resolve_assets_def(dg.AssetKey(["serving", "published_warehouse"]))
    assert publish.op.pool == DUCKDB_POOL and specs[("serving", "published_warehouse")].group_name == "serving"
    upstream = {d.asset_key for d in specs[("serving", "published_warehouse")].deps}
    assert {dg.AssetKey(["marts", "fct_orders"]), dg.AssetKey(["ml", "churn_scores"])} <= upstream
    assert dg.AssetKey(["serving", "published_warehouse"]) in {
        d.asset_key for d in specs[("serving", "bi_exports")].deps
    }
    assert "raw__web_events" not in {n.name for n in build.graph.node_defs}


def test_crm_run_materializes_every_asset_through_dagster(
    sample: GeneratorConfig, sample_copy: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its own Dagster instance: the partitions it checks below are the instance's, and other
    # modules' runs in the session's instance load other days of the same assets.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    warehouse = tmp_path / "crm.duckdb"
    # One dbt thread for the build from nothing, two for the later runs (Settings.dbt_full_build_threads).
    settings = replace(Settings.load(sample_copy[1], warehouse), dbt_threads=2, dbt_full_build_threads=1)
    summary = run_pipeline(settings)
    assert summary.as_of == sample.end  # the data's last day, not today
    assert all(summary.checks.values()), summary.checks
    assert {"staging/stg_store__order_lines", "staging/stg_customers__profiles", "raw/store"} <= set(
        summary.materialized
    )
    assert "staging/stg_store__order_lines:not_null_stg_store__order_lines_order_line_id" in summary.checks
    with duckdb.connect(str(warehouse), read_only=True) as con:
        ingested = {t: m for t, m in summary.materialized.items() if "rows_loaded" in m}
        # the franchise sends Excel; campaign lists come as CSV (the e-mail tool) and Excel (the CRM tool)
        assert len(ingested) == len(load_sources(sample_copy[1]).sources) == 8
        for table, meta in ingested.items():
            schema, name = table.split("/")
            count = con.execute(f"SELECT count(*) FROM {schema}.{name}").fetchall()[0][0]
            assert count == meta["rows_loaded"] == meta["dagster/row_count"] > 0
            assert meta["rows_read"] == (
                meta["rows_loaded"]
                + meta["rows_quarantined"]
                + meta["duplicates_skipped"]
                + meta["rows_superseded"]
                + meta["rows_suppressed"]
            )
        assert con.execute("SELECT count(*) FROM raw.quarantine").fetchall()[0][0] > 0
        # Staging keeps every loaded line (one per key) and reads phones in every shape.
        lines = con.execute("SELECT count(*) FROM staging.stg_store__order_lines").fetchall()[0][0]
        assert lines == sum(
            summary.materialized[f"raw/{s}"]["rows_loaded"] for s in ("pos_receipt_lines", "franchise_receipt_lines")
        )
        phones = con.execute(
            "SELECT count(phone_raw), count(phone_e164), count(*) FILTER (WHERE has_unusable_phone) FROM staging.stg_customers__profiles"
        ).fetchall()[0]
        assert phones[0] == phones[1] > 0 and phones[2] == 0
    with dg.DagsterInstance.get() as instance:
        record = instance.get_run_record_by_id(summary.run_id)
        assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        # The range's materializations went to the event log as one batch per source
        # (orchestration/_compat/dagster_event_log.py): every day is in the run's log and the cross-run index.
        assert isinstance(instance.event_log_storage, BatchingSqliteEventLogStorage)
        web = dg.AssetKey(["raw", "web_events"])
        days = {str(sample.start + dt.timedelta(days=i)) for i in range((sample.end - sample.start).days + 1)}
        assert instance.get_materialized_partitions(web) == days
        logged = instance.get_records_for_run(
            summary.run_ids[0], of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
        assert sorted(r.event_log_entry.dagster_event.partition for r in logged if r.asset_key == web) == sorted(days)
        # The build names the ingestion it built on, and the sensor does the same for the daemon's builds.
        ingest = instance.get_run_by_id(summary.run_ids[0])
        assert record.dagster_run.tags["crm/ingest_run"] == ingest.run_id
        success = instance.get_records_for_run(ingest.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS).records[0]
        context = dg.build_run_status_sensor_context(
            "build_after_ingest", success.event_log_entry.dagster_event, instance, ingest
        )
        from orchestration.definitions import build_definitions

        sensor = build_definitions(Settings.load(sample_copy[1], warehouse)).resolve_sensor_def("build_after_ingest")
        request = sensor(context)
        assert request.run_key == ingest.run_id
        assert request.tags == {"crm/ingest_run": ingest.run_id, "crm/as_of": str(sample.end)}
        latest = instance.get_latest_materialization_event(web)
        assert (
            latest.dagster_event.partition == str(sample.end)
            and latest.asset_materialization.metadata["rows_read"].value > 0
        )

    # The pipeline's build leaves dbt's unit tests to development and CI (DbtBuildConfig.unit_tests).
    steps = invocation_targets(summary.run_ids[-1])
    assert len(steps) == len(STEPS)  # dbt builds in its steps around the identity assets
    built = [r for s in steps for r in json.loads((s / "run_results.json").read_text())["results"]]
    assert {json.loads((s / "run_results.json").read_text())["args"]["threads"] for s in steps} == {1}
    # ("operation": the on-run-end hook that records which loads the data tests checked.)
    assert {r["unique_id"].split(".")[0] for r in built} == {"model", "seed", "test", "operation"}
    profile = _profile_hash(parse_state(warehouse))  # this deployment's parse state, from the first run
    # Another deployment's dbt parse in between (as the tests, the demo or the benchmark make) ...
    other = tmp_path / "other"
    subprocess.run(
        [
            DBT_EXECUTABLE,
            "parse",
            "--quiet",
            "--project-dir",
            str(DBT_DIR),
            "--profiles-dir",
            str(DBT_DIR),
            "--target-path",
            str(other),
        ],
        check=True,
        env={**os.environ, "CRM_WAREHOUSE": str(other / "crm.duckdb")},
    )
    (DBT_DIR / "target" / "partial_parse.msgpack").write_bytes((other / "partial_parse.msgpack").read_bytes())

    # A backfill over three days replaces exactly those partitions: same rows as before.
    before = _counts(warehouse)
    again = run_pipeline(
        settings,
        start=sample.start + dt.timedelta(days=3),
        end=sample.start + dt.timedelta(days=5),
    )
    assert _counts(warehouse) == before
    steps = invocation_targets(again.run_ids[-1])
    assert {json.loads((s / "run_results.json").read_text())["args"]["threads"] for s in steps} == {2}
    assert again.materialized["raw/web_events"]["rows_loaded"] < before["web_events"]
    # ... and its dbt build reuses this deployment's parse of the first run (dbt_assets.parse_state),
    # which stays this deployment's for the next.
    assert not any("UnableToPartialParse" in (s / "dbt.log").read_text() for s in invocation_targets(again.run_ids[-1]))
    assert _profile_hash(parse_state(warehouse)) == profile

    # A selection inside a dbt step (the UI's "Materialize selected"): dbt, run in this process,
    # builds that model alone and reports its tests as the model's checks.
    from orchestration.definitions import build_definitions

    channel = dg.AssetKey(["marts", "dim_channel"])
    job = build_definitions(Settings.load(sample_copy[1], warehouse)).resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.get() as instance:
        subset = job.execute_in_process(instance=instance, asset_selection=[channel])
    assert [e.asset_key for e in subset.get_asset_materialization_events()] == [channel]
    checks = subset.get_asset_check_evaluations()
    assert checks and all(c.asset_key == channel and c.passed for c in checks)


def _profile_hash(parse_state: Path) -> str:
    """The hash of the dbt profile a saved parse state was made for (dbt reuses it only for that profile)."""
    import msgpack

    return msgpack.unpackb(parse_state.read_bytes(), raw=False, strict_map_key=False)["state_check"]["profile_hash"][
        "checksum"
    ]


def _counts(warehouse: Path) -> dict[str, int]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "SELECT table_name, 0 FROM duckdb_tables() WHERE schema_name = 'raw' AND table_name NOT LIKE '\\_%' ESCAPE '\\'"
        ).fetchall()
        return {t: con.execute(f"SELECT count(*) FROM raw.{t}").fetchall()[0][0] for t, _ in rows}


def test_unreadable_file_fails_the_run_with_its_name(
    sample: GeneratorConfig, sample_copy: tuple[Path, Path], tmp_path: Path
) -> None:
    extracts, sources_file = sample_copy
    warehouse = tmp_path / "crm.duckdb"
    run_pipeline(Settings.load(sources_file, warehouse))
    before = _counts(warehouse)
    day = sample.start + dt.timedelta(days=4)
    bad = extracts / "call_center" / f"calls_{day}.csv"
    bad.write_bytes(random.Random(2).randbytes(2000))
    with pytest.raises(RunFailed, match=rf"cannot read {bad}.*partitions {day} left as they were"):
        run_pipeline(Settings.load(sources_file, warehouse), start=day, end=day)
    assert _counts(warehouse) == before


def test_sensor_requests_partitions_of_new_files(
    sample: GeneratorConfig, sample_copy: tuple[Path, Path], definitions: dg.Definitions
) -> None:
    sensor = definitions.resolve_sensor_def("new_extract_files")
    with dg.DagsterInstance.ephemeral() as instance:
        first = sensor(dg.build_sensor_context(instance=instance, cursor=None, definitions=definitions))
        assert {tuple(r.asset_selection[0].path) for r in first.run_requests} == {
            ("raw", s.name) for s in load_sources(sample_copy[1]).sources
        }
        store = next(r for r in first.run_requests if r.asset_selection[0].path[1] == "pos_receipt_lines")
        assert store.tags["dagster/asset_partition_range_start"] == str(sample.start)
        assert store.tags["dagster/asset_partition_range_end"] == str(sample.end)
        quiet = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=definitions))
        assert quiet.run_requests == []
        day = sample.start + dt.timedelta(days=9)
        new = sample_copy[0] / "social" / f"social_{day}.resend.jsonl"
        new.write_text(
            '{"id":"so-x","platform":"weibo","handle":"@x","type":"post","created_at":"'
            + f"{day}T10:00:00+08:00"
            + '"}\n'
        )
        landed = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=definitions))
        (request,) = landed.run_requests
        assert request.asset_selection == [dg.AssetKey(["raw", "social_interactions"])]
        assert request.tags["dagster/asset_partition_range_start"] == str(day)


def test_online_retail_through_dagster(tmp_path: Path) -> None:
    """A real retailer's invoices built to 6 December 2011, then day by day as a schedule would run:
    every table the store data fills ends with the rows of a full refresh, and the marts add up."""
    warehouse = tmp_path / "retail.duckdb"
    settings = Settings.load(ONLINE_RETAIL_SOURCES, warehouse)
    summaries = [run_pipeline(settings, end=dt.date(2011, 12, 6), as_of=dt.date(2011, 12, 6))]
    summaries += [run_pipeline(settings, start=d, end=d, as_of=d) for d in (dt.date(2011, 12, 7), dt.date(2011, 12, 8))]
    summaries.append(run_pipeline(settings, start=dt.date(2011, 12, 9)))  # as of the last day with data
    assert summaries[-1].as_of == dt.date(2011, 12, 9)
    loads = [s.materialized["raw/uk_store_sales"] for s in summaries]
    assert sum(m["rows_loaded"] for m in loads) == 541_909 and not any(m["rows_quarantined"] for m in loads)
    assert all(all(s.checks.values()) for s in summaries), [s.checks for s in summaries]
    refreshed = tmp_path / "refreshed.duckdb"
    shutil.copyfile(warehouse, refreshed)
    build_steps(refreshed, tmp_path / "target")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        con.execute(f"ATTACH '{refreshed}' AS refreshed (READ_ONLY)").fetchall()
        filled = [t for t in INCREMENTAL if con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]]
        assert len(filled) == 8, filled  # store lines and their facts, identifiers, the customer marts
        assert_same_rows(con, "refreshed", filled + ["intermediate.int_customer_keys_assigned"])
        revenue = con.execute("SELECT sum(quantity * unit_price) FROM raw.uk_store_sales").fetchall()[0][0]
        staged, returns, staged_revenue = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE is_return), sum(quantity * unit_price) FROM staging.stg_store__order_lines"
        ).fetchall()[0]
        # A store-only deployment: the other channels' views and staging models exist, empty.
        assert con.execute("SELECT count(*) FROM staging.stg_web__events").fetchall()[0][0] == 0
        # A source that carries only customer_ref still gets customers, orders and lines.
        fact_lines, fact_revenue, customers, orders = con.execute(
            "SELECT count(*), sum(quantity * unit_price), count(DISTINCT customer_key), count(DISTINCT order_key) "
            "FROM marts.fct_order_lines"
        ).fetchall()[0]
        non_products = con.execute("SELECT count(*) FROM marts.dim_product WHERE is_non_product").fetchall()[0][0]
        customer_rows = con.execute(
            "SELECT count(*), count(customer_ref), count(*) FILTER (WHERE is_current) FROM marts.dim_customer"
        ).fetchall()[0]
        known = con.execute("SELECT count(*), sum(net_revenue) FROM marts.customer_360 WHERE orders > 0").fetchall()[0]
        order_count = con.execute("SELECT count(*) FROM marts.fct_orders").fetchall()[0][0]
        # A store file with only customer ref, order, date, SKU, quantity and price still gets every ML table
        # that needs no other channel.
        # No campaign lists: the campaign tables are not built (and say why in their metadata).
        campaign_tables = {"campaign_results", "uplift_scores"}
        assert not campaign_tables & {r[0] for r in con.execute("SHOW TABLES FROM ml").fetchall()}
        ml_rows = {
            t: con.execute(f"SELECT count(*) FROM ml.{t}").fetchall()[0][0] for t in TABLES if t not in campaign_tables
        }
        # No categories in the file: the forecasts take the top SKUs instead of one 'unknown' category.
        forecast_types = {r[0] for r in con.execute("SELECT DISTINCT series_type FROM ml.sales_forecast").fetchall()}
    assert forecast_types == {"total", "channel", "region", "sku"}
    assert (fact_lines, fact_revenue) == (541_909, revenue)
    assert (customers, orders) == (4_372, 25_900) and non_products >= 4
    assert customer_rows == (4_372, 4_372, 4_372) and order_count == 25_900
    assert ml_rows.pop("triggered_audiences") == 0  # no web sessions: nobody abandoned a cart
    assert all(rows > 0 for rows in ml_rows.values()), ml_rows
    assert known[0] > 4_300 and float(known[1]) > 0.8 * float(revenue)  # a sixth of lines carry no customer
    assert float(revenue) == pytest.approx(9_747_747.93, abs=0.01)
    assert (staged, staged_revenue) == (541_909, revenue) and returns > 9_000


def crm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_cli_help_and_one_line_errors(tmp_path: Path) -> None:
    help_ = crm("--help")
    assert help_.returncode == 0
    for command in ("generate", "run", "contracts"):
        assert command in help_.stdout
        assert crm(command, "--help").returncode == 0
    missing = crm("run", "--sources", str(tmp_path / "nope.yml"), "--warehouse", str(tmp_path / "w.duckdb"))
    assert missing.returncode == 1
    errors = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot read sources file" in errors[0]
    bad_date = crm("run", "--as-of", "yesterday")
    assert bad_date.returncode != 0 and "is not a date" in bad_date.stderr
