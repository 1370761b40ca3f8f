"""The dbt project builds with dbt's own CLI and the repo's profile (its steps around the identity
step, as the pipeline runs them), its incremental facts equal a full refresh after the warehouse
grew run by run (a rerun of every day, and a run of only
the days after the last one), the fuzzy step scores again only changed profiles, and the
benchmark's SQL floor of the models builds the same marts."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from ingestion.generator import GeneratorConfig
from orchestration.dbt_assets import DBT_DIR
from tests.conftest import Grown, repoint_lineage, sources_for

pytestmark = pytest.mark.slow  # every test here runs the pipeline or reads its warehouse

INCREMENTAL = [
    "staging.stg_customers__profiles",
    "staging.stg_store__order_lines",
    "staging.stg_web__events",
    "staging.stg_call_center__calls",
    "staging.stg_social__interactions",
    "staging.stg_campaigns__contacts",
    "marts.fct_order_lines",
    "marts.fct_orders",
    "marts.fct_payments",
    "marts.fct_web_sessions",
    "marts.fct_interactions",
    "intermediate.int_web_events_sessionized",
    "intermediate.int_social_interactions_scored",
    "intermediate.int_identifiers_collected",
    "intermediate.int_profiles_matched",
    "marts.customer_identity_map",
    "marts.dim_customer",
    "marts.customer_360",
    "intermediate.int_campaign_contacts_resolved",
    "marts.fct_campaign_contacts",
]


def dbt(*args: str, warehouse: Path, target: Path, ok: bool = True) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("dbt")),
            *args,
            "--project-dir",
            str(DBT_DIR),
            "--profiles-dir",
            str(DBT_DIR),
            "--target-path",
            str(target),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "CRM_WAREHOUSE": str(warehouse)},
        timeout=600,
    )
    assert (run.returncode == 0) == ok, run.stdout[-3000:]
    return run


def dbt_test(select: list[str], warehouse: Path, target: Path, full_test_day: bool = False, ok: bool = True) -> str:
    """The output of `dbt test` of `select` as a daily run, or as a run of the weekly full-test day."""
    weekday = dt.datetime.now(dt.UTC).isoweekday() if full_test_day else 0
    return dbt(
        "test", *select, "--vars", f"{{full_tests_weekday: {weekday}}}", warehouse=warehouse, target=target, ok=ok
    ).stdout


def build_steps(warehouse: Path, target: Path, full_refresh: bool = True) -> str:
    """What the pipeline runs between ingestion and ML, without Dagster: dbt's CLI for each step
    (orchestration/dbt_assets.py: STEPS), the identity steps (identity/duckdb.py) after the first
    two. Returns dbt's output."""
    from identity.duckdb import assign_customer_keys, match_profiles
    from ingestion.sources import FUZZY_MATCH_THRESHOLD
    from orchestration.dbt_assets import STEPS

    identity = [
        lambda con: match_profiles(con, FUZZY_MATCH_THRESHOLD, full_refresh),
        lambda con: assign_customer_keys(con, "4GB", full_refresh),
    ]
    out = []
    for i, (select, exclude) in enumerate(STEPS.values()):
        args = [
            "--select",
            select,
            *(["--exclude", exclude] if exclude else []),
            *(["--full-refresh"] if full_refresh else []),
        ]
        out.append(dbt("build", *args, warehouse=warehouse, target=target).stdout)
        if i < len(identity):
            with duckdb.connect(str(warehouse)) as con:
                identity[i](con)
    return "\n".join(out)


# Columns saying when a run wrote a row, not what the row is: a full refresh writes other values.
RUN_METADATA = {"intermediate.int_identifiers_collected": "collected_at"}


def assert_same_rows(con: duckdb.DuckDBPyConnection, other: str, tables: list[str]) -> None:
    """Each table holds rows, and exactly the rows of the same table in the attached catalog `other`
    (but for its RUN_METADATA column)."""
    for table in tables:
        columns = f"* EXCLUDE ({RUN_METADATA[table]})" if table in RUN_METADATA else "*"
        here, there = f"SELECT {columns} FROM {table}", f"SELECT {columns} FROM {other}.{table}"
        rows = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        only_here = con.execute(f"SELECT count(*) FROM ({here} EXCEPT ALL {there})").fetchall()[0][0]
        only_there = con.execute(f"SELECT count(*) FROM ({there} EXCEPT ALL {here})").fetchall()[0][0]
        assert rows > 0 and (only_here, only_there) == (0, 0), (table, rows, only_here, only_there)


# int_profiles_matched is scored again with the run's u: see test_fuzzy_pairs_are_scored_again_only_for_profiles_loaded_since.
RESCORED = "intermediate.int_profiles_matched"


def test_dbt_build_standalone_and_full_refresh_equals_incremental(grown: Grown, tmp_path: Path) -> None:
    warehouse = tmp_path / "crm.duckdb"
    shutil.copyfile(grown.warehouse, warehouse)
    built = build_steps(warehouse, tmp_path / "target")
    # phones/emails/names, latest delivery (full and daily), identity rules, sessionization (full and daily),
    # campaign lookup and window
    assert built.count("START unit_test") == 8, built[-3000:]

    # Built run by run (midway, then the rest: new dates, late rows, re-keyed customers) = built at once.
    with duckdb.connect(str(warehouse), read_only=True) as con:
        con.execute(f"ATTACH '{grown.warehouse}' AS grown (READ_ONLY)").fetchall()
        assert_same_rows(con, "grown", INCREMENTAL)
        schemas = {r[0] for r in con.execute("SELECT DISTINCT table_schema FROM information_schema.tables").fetchall()}
    assert {"raw", "staging", "intermediate", "marts"} <= schemas and not any(s.startswith("main_") for s in schemas)

    dbt("docs", "generate", warehouse=warehouse, target=tmp_path / "target")
    assert (tmp_path / "target" / "catalog.json").exists()


@dataclass(frozen=True)
class NextDays:
    """The midway warehouse grown by a run of only the days after it, as a daily schedule grows a
    deployment (every incremental model on its incremental path), and a copy of that warehouse
    rebuilt by `dbt build --full-refresh`."""

    warehouse: Path
    refreshed: Path


@pytest.fixture(scope="module")
def next_days(grown: Grown, sample: GeneratorConfig, tmp_path_factory: pytest.TempPathFactory) -> NextDays:
    from orchestration.run import run_pipeline
    from orchestration.settings import Settings

    root = tmp_path_factory.mktemp("next_days")
    warehouse, refreshed = root / "crm.duckdb", root / "refreshed.duckdb"
    shutil.copyfile(grown.midway, warehouse)
    run_pipeline(Settings.load(grown.sources, warehouse), start=sample.start + dt.timedelta(days=21))
    shutil.copyfile(warehouse, refreshed)
    build_steps(refreshed, root / "target")
    return NextDays(warehouse, refreshed)


def test_incremental_facts_of_the_next_days_equal_a_full_refresh(next_days: NextDays) -> None:
    with duckdb.connect(str(next_days.warehouse), read_only=True) as con:
        con.execute(f"ATTACH '{next_days.refreshed}' AS refreshed (READ_ONLY)").fetchall()
        assert_same_rows(con, "refreshed", [t for t in INCREMENTAL if t != RESCORED])


# Rebuilt whole each run, from the incremental tables above: equal too when those are.
REBUILT = [
    "intermediate.int_identifier_quality",
    "intermediate.int_customer_keys_assigned",
]


@dataclass(frozen=True)
class DailyRuns:
    """The midway warehouse grown day by day as a schedule would, with what real deliveries do
    between the days, and a copy rebuilt by `dbt build --full-refresh`."""

    warehouse: Path
    refreshed: Path
    redelivered: tuple[Path, int]  # the re-delivered file and the lines it still holds
    shared_phone: str  # a member's phone a call gives to another member: newly guarded
    erased: str  # the customer key erased between two days
    registered_twice: tuple[str, str]  # two members' refs a later call joins into one customer
    late_receipt: tuple[Path, dt.date]  # the later day's file holding a sale of an earlier day
    split_order: tuple[str, int, int]  # an order's line synced a day late, then taken back: (receipt, lines, left)
    bridged: tuple[str, str]  # two sessions of a cookie late web events join: (the first's id, the second's)
    started: dt.datetime  # when the first daily run began (UTC, naive as the warehouse's timestamps)


def plant_call(extracts: Path, day: dt.date, call_id: str, phone: str, member: str) -> None:
    """Appends to the day's call file a real call of that day, given another caller and member."""
    calls = extracts / "call_center" / f"calls_{day}.csv"
    with calls.open(encoding="utf-8", newline="") as f:
        first = next(csv.DictReader(f))
    planted = {**first, "call_id": call_id, "caller_number": phone[3:], "cust_id": member, "notes": ""}
    with calls.open("a", encoding="utf-8", newline="") as f:
        f.write("" if calls.read_bytes().endswith(b"\n") else "\r\n")
        csv.DictWriter(f, fieldnames=list(first), lineterminator="\r\n").writerow(planted)


def plant_bridging_events(extracts: Path, con: duckdb.DuckDBPyConnection, delivered: dt.date) -> tuple[str, str]:
    """Web events, in the web file of `delivered`, at most 25 minutes apart over the shortest gap
    between two sessions of a cookie (a browser that synced late): they join the sessions. The two
    sessions' ids."""
    first, second, event_id, gap = con.execute("""
        select web_session_id, next_session_id, next_event_id, next_event_at - event_at from (
            select *,
                lead(web_session_id) over w as next_session_id, lead(event_id) over w as next_event_id,
                lead(event_at) over w as next_event_at
            from intermediate.int_web_events_sessionized
            window w as (partition by cookie_id order by event_at, web_event_id)
        )
        where next_session_id <> web_session_id
        order by next_event_at - event_at, cookie_id limit 1""").fetchall()[0]
    line = next(
        raw
        for file in sorted((extracts / "web").glob("events_*.jsonl"))
        for raw in file.read_bytes().splitlines()
        if f'"event_id":"{event_id}"'.encode() in raw
    )
    event, late = json.loads(line), -(-gap // dt.timedelta(minutes=25)) - 1
    resumed = dt.datetime.fromisoformat(event["ts"])
    planted = [
        {
            **event,
            "event_id": f"{event_id}-LATE-{n}",
            "ts": (resumed - gap * n / (late + 1)).isoformat(timespec="milliseconds"),
        }
        for n in range(1, late + 1)
    ]
    target = extracts / "web" / f"events_{delivered}.jsonl"
    target.write_bytes(
        target.read_bytes().rstrip(b"\n") + b"".join(b"\n" + json.dumps(e).encode() for e in planted) + b"\n"
    )
    return first, second


def plant_store_line(
    extracts: Path, sold: dt.date, delivered: dt.date, change: Callable[[dict[str, str]], dict[str, str]]
) -> tuple[Path, bytes, dict[str, str]]:
    """Puts a copy of the first receipt line of a store's file of `sold`, with the fields `change`
    gives it, at the top of the same store's file of `delivered` (the top: a sample file's last
    record may open a quote it never closes). The file written, its bytes before, and the line written."""
    source, target = next(
        (sold_file, delivered_file)
        for store in sorted((extracts / "store").iterdir())
        for sold_file in store.glob(f"pos_*_{sold}.csv")
        for delivered_file in store.glob(f"pos_*_{delivered}.csv")
    )  # a store with a file of both days
    with source.open(encoding="utf-8", newline="") as f:
        line = next(csv.DictReader(f))
    planted = {**line, **change(line)}
    before = target.read_bytes()
    header, rest = before.split(b"\n", 1)
    row = io.StringIO()
    csv.DictWriter(row, fieldnames=list(line), lineterminator="\r\n" if header.endswith(b"\r") else "\n").writerow(
        planted
    )
    target.write_bytes(header + b"\n" + row.getvalue().encode() + rest)
    return target, before, planted


def plant_late_receipt(extracts: Path, sold: dt.date, delivered: dt.date) -> Path:
    """A sale of `sold`, under a new receipt number, in a store's file of `delivered`. The file written."""
    return plant_store_line(extracts, sold, delivered, lambda line: {"receipt_no": line["receipt_no"] + "-LATE"})[0]


def plant_next_day_line(extracts: Path, sold: dt.date) -> tuple[Path, bytes, str]:
    """One more line of a receipt sold on `sold`, stamped a day later, in a store's file of the next
    day (a till that synced one line after midnight): the order now spans two days. The file
    written, its bytes before, and the receipt."""

    def day_later(line: dict[str, str]) -> dict[str, str]:
        sold_at = dt.datetime.fromisoformat(line["sold_at"]) + dt.timedelta(days=1)
        return {"line_no": "99", "sold_at": sold_at.isoformat(sep=" ")}

    target, before, line = plant_store_line(extracts, sold, sold + dt.timedelta(days=1), day_later)
    return target, before, line["receipt_no"]


@pytest.fixture(scope="module")
def daily_runs(grown: Grown, sample: GeneratorConfig, tmp_path_factory: pytest.TempPathFactory) -> DailyRuns:
    from ingestion.sources import load_sources
    from orchestration.run import run_pipeline
    from orchestration.settings import Settings
    from serving.erasure import erase

    root = tmp_path_factory.mktemp("daily_runs")
    extracts, warehouse = root / "extracts", root / "crm.duckdb"
    shutil.copytree(grown.warehouse.parent / "extracts", extracts)  # copytree keeps delivery times
    shutil.copyfile(grown.midway, warehouse)
    repoint_lineage(warehouse, grown.warehouse.parent / "extracts", extracts)
    sources = sources_for(extracts, root / "sources.yml", sample.start)
    # Daily runs whatever the weekday: their tests read what each run changed (not the weekly full test).
    sources.write_text(sources.read_text() + "tests: {full_tests_weekday: 0}\n")
    settings = Settings.load(sources, warehouse)
    day = sample.start + dt.timedelta(days=21)
    started = dt.datetime.now(dt.UTC).replace(tzinfo=None)

    def run(start: dt.date, end: dt.date, as_of: dt.date) -> None:
        summary = run_pipeline(settings, as_of=as_of, start=start, end=end)
        failed = {k for k, v in summary.checks.items() if not v and not k.endswith(":row_count_positive")}
        assert not failed, failed  # a day may bring no campaign list

    def run_day(d: dt.date) -> None:
        run(d, d, d)

    run_day(day)
    # A re-delivered day: an earlier web file without its first 40 events, loaded again.
    web = extracts / "web" / f"events_{sample.start + dt.timedelta(days=10)}.jsonl"
    lines = web.read_bytes().splitlines(keepends=True)  # bytes: sample files hold invalid UTF-8
    web.write_bytes(b"".join(lines[40:]))
    run(sample.start + dt.timedelta(days=10), sample.start + dt.timedelta(days=10), day)
    # A shared landline: tomorrow a call gives member A's phone with member B's customer ref.
    with duckdb.connect(str(warehouse), read_only=True) as con:
        ((phone, other),) = con.execute("""
            select a.phone_e164, b.customer_ref from staging.stg_customers__profiles as a
            inner join staging.stg_customers__profiles as b on a.customer_ref < b.customer_ref
            where a.phone_e164 like '+86%' and a.phone_e164 not in (
                select identifier_value from intermediate.int_identifier_quality)
            order by a.customer_ref, b.customer_ref limit 1""").fetchall()
    tomorrow = day + dt.timedelta(days=1)
    plant_call(extracts, tomorrow, "CALL-PLANTED-1", phone, other)
    run_day(tomorrow)
    # An erasure between two days: the customer with the most records.
    with duckdb.connect(str(warehouse)) as con:
        ((erased,),) = con.execute(
            "select customer_key from marts.customer_identity_map group by 1 order by count(*) desc, 1 limit 1"
        ).fetchall()
        erase(con, [erased], load_sources(settings.sources_file).sources)
    # A member registered twice: a call gives one registration's phone with the other's ref. They
    # share a birth date (not a name), which the guard reads as one person: two known customers merge.
    # Both were contacted by a campaign: their contacts must follow the merge.
    with duckdb.connect(str(warehouse), read_only=True) as con:
        twice = con.execute("""
            select a.phone_e164, b.customer_ref, a.customer_ref from staging.stg_customers__profiles as a
            inner join staging.stg_customers__profiles as b
                on a.birth_date = b.birth_date and lower(a.full_name) <> lower(b.full_name)
            inner join marts.customer_identity_map as ma on ma.record_key = 'profile:' || a.customer_ref
            inner join marts.customer_identity_map as mb on mb.record_key = 'profile:' || b.customer_ref
            where ma.customer_key <> mb.customer_key and a.phone_e164 like '+86%' and a.phone_e164 not in (
                select identifier_value from intermediate.int_identifier_quality)
              and a.customer_ref in (select customer_ref from staging.stg_campaigns__contacts)
              and b.customer_ref in (select customer_ref from staging.stg_campaigns__contacts)
            order by a.customer_ref, b.customer_ref limit 1""").fetchall()[0]
    plant_call(extracts, day + dt.timedelta(days=2), "CALL-PLANTED-2", twice[0], twice[1])
    # A receipt synced late: a sale of day+2 that reaches the tills' file of day+4.
    late_receipt = (
        plant_late_receipt(extracts, day + dt.timedelta(days=2), day + dt.timedelta(days=4)),
        day + dt.timedelta(days=2),
    )
    # An order's line synced a day late, then taken back by a corrected file of that day.
    split_file, split_before, receipt = plant_next_day_line(extracts, day + dt.timedelta(days=2))
    # Late web events that join two sessions of a cookie: the cookie is redone from the first on.
    with duckdb.connect(str(warehouse), read_only=True) as con:
        bridged = plant_bridging_events(extracts, con, day + dt.timedelta(days=3))
    for d in range(2, 5):
        run_day(day + dt.timedelta(days=d))
    with duckdb.connect(str(warehouse), read_only=True) as con:
        ((spanned,),) = con.execute("select lines from marts.fct_orders where order_id = ?", [receipt]).fetchall()
    split_file.write_bytes(split_before)
    run(day + dt.timedelta(days=3), day + dt.timedelta(days=3), day + dt.timedelta(days=4))
    with duckdb.connect(str(warehouse), read_only=True) as con:
        ((split_lines,),) = con.execute(
            "select count(*) from staging.stg_store__order_lines where order_id = ?", [receipt]
        ).fetchall()

    refreshed = root / "refreshed.duckdb"
    shutil.copyfile(warehouse, refreshed)
    build_steps(refreshed, root / "target")
    return DailyRuns(
        warehouse,
        refreshed,
        (web, len(lines) - 40),
        phone,
        erased,
        (twice[2], twice[1]),
        late_receipt,
        (receipt, spanned, split_lines),
        bridged,
        started,
    )


def test_daily_runs_with_redeliveries_late_rows_a_merge_a_new_guard_and_an_erasure_equal_a_full_refresh(
    daily_runs: DailyRuns,
) -> None:
    with duckdb.connect(str(daily_runs.warehouse), read_only=True) as con:
        # What happened between the days did happen.
        web, events = daily_runs.redelivered
        last_row = con.execute(
            "select max(source_row_number) from staging.stg_web__events where source_file = ?", [str(web)]
        ).fetchall()[0][0]
        assert 0 < last_row <= events  # the file's old rows left with its re-delivery
        assert (
            con.execute(
                "select count(*) from intermediate.int_identifier_quality where identifier_value = ?",
                [daily_runs.shared_phone],
            ).fetchall()[0][0]
            == 1
        )
        assert (
            con.execute(
                "select count(*) from marts.customer_360 where customer_key = ?", [daily_runs.erased]
            ).fetchall()[0][0]
            == 0
        )
        # The late receipt joined its sale's day from a later file, and the two registrations merged.
        late_file, sold = daily_runs.late_receipt
        late = con.execute(
            "select source_partition_date, source_file from staging.stg_store__order_lines where order_id like '%-LATE'"
        ).fetchall()
        assert late == [(sold, str(late_file))]
        keys = con.execute(
            "select distinct customer_key from marts.customer_identity_map where record_key in (?, ?)",
            [f"profile:{ref}" for ref in daily_runs.registered_twice],
        ).fetchall()
        merges = con.execute(
            "select count(*) from intermediate.int_customer_merges where surviving_customer_key = ? and merged_at >= ?",
            [keys[0][0], daily_runs.started],
        ).fetchall()
        assert len(keys) == 1 and merges == [(1,)], (keys, merges)
        # The order that spanned two days is summed again from the lines it kept; no note is left.
        receipt, spanned, kept = daily_runs.split_order
        assert spanned == kept + 1, (spanned, kept)
        assert con.execute("select lines from marts.fct_orders where order_id = ?", [receipt]).fetchall() == [(kept,)]
        assert con.execute("select count(*) from main.dbt_lost_keys").fetchall() == [(0,)]
        # The late web events joined their cookie's two sessions into the first.
        first, second = daily_runs.bridged
        assert con.execute(
            "select distinct web_session_id from intermediate.int_web_events_sessionized where web_session_id in (?, ?) "
            "or web_event_id like '%-LATE-%'",
            [first, second],
        ).fetchall() == [(first,)]

        # Every daily run took again only the edges collected since its last run (and those of the
        # newly guarded phone), and recomputed only the customers an added or removed edge touched.
        runs = con.execute(
            "select path, edges_retaken, records_recomputed from intermediate.int_customer_keys_assigned__runs "
            "order by run_at"
        ).fetchall()
        records = con.execute("select count(*) from marts.customer_identity_map").fetchall()[0][0]
        edges = con.execute("select count(*) from intermediate.int_customer_keys_assigned__edges").fetchall()[0][0]
        assert all(path == "incremental" and e < edges / 2 and n < records / 2 for path, e, n in runs[-6:]), runs

        con.execute(f"ATTACH '{daily_runs.refreshed}' AS refreshed (READ_ONLY)").fetchall()
        assert_same_rows(con, "refreshed", [t for t in INCREMENTAL + REBUILT if t != RESCORED])


def test_the_identity_map_rebuilds_only_the_records_the_keys_step_marked_stale(
    daily_runs: DailyRuns, tmp_path: Path
) -> None:
    """Daily runs left the keys step's list of stale records empty (the map consumed it); a build of
    the map rewrites the rows of the records on that list and leaves every other row as it is."""
    warehouse = tmp_path / "crm.duckdb"
    shutil.copyfile(daily_runs.warehouse, warehouse)
    stale = "intermediate.int_customer_keys_assigned__stale"
    with duckdb.connect(str(warehouse)) as con:
        assert con.execute(f"select count(*) from {stale}").fetchall() == [(0,)]
        (marked, marked_type, marked_id), (unmarked, _, _) = con.execute(
            "select record_key, record_type, record_id from marts.customer_identity_map order by record_key limit 2"
        ).fetchall()
        con.execute(
            "update marts.customer_identity_map set matched_by = 'planted' where record_key in (?, ?)",
            [marked, unmarked],
        ).fetchall()
        con.execute(f"insert into {stale} values (?, ?)", [marked_type, marked_id]).fetchall()
    dbt("run", "--select", "customer_identity_map", warehouse=warehouse, target=tmp_path / "target")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        matched = dict(
            con.execute(
                "select record_key, matched_by from marts.customer_identity_map where record_key in (?, ?)",
                [marked, unmarked],
            ).fetchall()
        )
        assert con.execute(f"select count(*) from {stale}").fetchall() == [(0,)]
    assert matched[unmarked] == "planted" and matched[marked] != "planted", matched


def test_customer_360_rebuilds_only_the_customers_noted_as_changed(daily_runs: DailyRuns, tmp_path: Path) -> None:
    """Daily runs left the facts' list of changed customers empty (customer_360 consumed it); a build
    of customer_360 rewrites the customers on that list and leaves every other row as it is."""
    warehouse = tmp_path / "crm.duckdb"
    shutil.copyfile(daily_runs.warehouse, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        assert con.execute("select count(*) from main.dbt_changed_customers").fetchall() == [(0,)]
        noted, other = (
            k for (k,) in con.execute("select customer_key from marts.customer_360 order by 1 limit 2").fetchall()
        )
        con.execute("update marts.customer_360 set orders = -1 where customer_key in (?, ?)", [noted, other]).fetchall()
        con.execute("insert into main.dbt_changed_customers values (?)", [noted]).fetchall()
    dbt("run", "--select", "customer_360", warehouse=warehouse, target=tmp_path / "target")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        orders = dict(
            con.execute(
                "select customer_key, orders from marts.customer_360 where customer_key in (?, ?)", [noted, other]
            ).fetchall()
        )
        assert con.execute("select count(*) from main.dbt_changed_customers").fetchall() == [(0,)]
    assert orders[other] == -1 and orders[noted] >= 0, orders


def test_campaign_contacts_rebuild_only_the_customers_noted_and_the_contacts_without_one(
    daily_runs: DailyRuns, tmp_path: Path
) -> None:
    """A build of the campaign contacts resolves again the contacts of the customers on the list of
    changed customers (noting the customers a contact leaves or takes), builds again those
    customers' campaign rows and every row without a customer, and leaves every other row as it is."""
    warehouse = tmp_path / "crm.duckdb"
    shutil.copyfile(daily_runs.warehouse, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        noted, other = (
            k
            for (k,) in con.execute(
                "select customer_key from intermediate.int_campaign_contacts_resolved "
                "where customer_key is not null group by 1 order by 1 limit 2"
            ).fetchall()
        )
        con.execute(
            "update intermediate.int_campaign_contacts_resolved set resolution = 'planted' where customer_key in (?, ?)",
            [noted, other],
        ).fetchall()
        con.execute(
            "update marts.fct_campaign_contacts set orders = -1 where customer_key in (?, ?) or customer_key is null",
            [noted, other],
        ).fetchall()
        con.execute("insert into main.dbt_changed_customers values (?)", [noted]).fetchall()
    dbt(
        "run",
        "--select",
        "int_campaign_contacts_resolved fct_campaign_contacts",
        warehouse=warehouse,
        target=tmp_path / "target",
    )
    with duckdb.connect(str(warehouse), read_only=True) as con:
        resolutions = dict(
            con.execute(
                "select customer_key, min(resolution) from intermediate.int_campaign_contacts_resolved "
                "where customer_key in (?, ?) group by 1",
                [noted, other],
            ).fetchall()
        )
        orders = dict(
            con.execute(
                "select coalesce(customer_key, 'none'), min(orders) from marts.fct_campaign_contacts "
                "where customer_key in (?, ?) or customer_key is null group by 1",
                [noted, other],
            ).fetchall()
        )
        listed = {k for (k,) in con.execute("select customer_key from main.dbt_changed_customers").fetchall()}
    assert resolutions == {noted: "matched", other: "planted"}, resolutions
    assert orders[other] == -1 and orders[noted] >= 0 and orders.get("none", 0) >= 0, orders
    assert listed == {noted}, listed  # the planted resolution changed back: its customer noted again


def test_a_day_rebuilt_for_one_changed_line_notes_only_that_lines_customer(
    daily_runs: DailyRuns, tmp_path: Path
) -> None:
    """A store line loaded again with another quantity rebuilds its whole day of order lines; the
    day's other lines go back as they were, so only that line's customer is noted as changed."""
    warehouse = tmp_path / "crm.duckdb"
    shutil.copyfile(daily_runs.warehouse, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        ((line, day, customer),) = con.execute("""
            select order_line_id, ordered_local_date, customer_key from marts.fct_order_lines
            where channel = 'store' and customer_key is not null
            order by ordered_local_date desc, order_line_id limit 1""").fetchall()
        ((others,),) = con.execute(
            "select count(distinct customer_key) from marts.fct_order_lines where ordered_local_date = ? "
            "and customer_key <> ?",
            [day, customer],
        ).fetchall()
        con.execute(
            # loaded after the model's newest line (a web line's, when the web was loaded last)
            "update staging.stg_store__order_lines set quantity = quantity + 1, "
            "source_loaded_at = (select max(source_loaded_at) from marts.fct_order_lines) + interval 1 second "
            "where order_line_id = ?",
            [line],
        ).fetchall()
    dbt("run", "--select", "fct_order_lines", warehouse=warehouse, target=tmp_path / "target")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        noted = {k for (k,) in con.execute("select customer_key from main.dbt_changed_customers").fetchall()}
        ((quantity_changed,),) = con.execute(
            "select count(*) from marts.fct_order_lines as f inner join staging.stg_store__order_lines as s "
            "using (order_line_id) where order_line_id = ? and f.quantity = s.quantity",
            [line],
        ).fetchall()
    assert others > 0 and quantity_changed == 1 and noted == {customer}, (others, noted)


def test_rows_are_rekeyed_from_the_maps_own_list_and_every_row_once_where_that_list_is_new(
    daily_runs: DailyRuns, tmp_path: Path
) -> None:
    """The facts' post-hook re-keys the rows of the customers the identity map noted in its own list,
    whatever the facts noted. A warehouse from before that list (a failed run may have left the
    map's notes in the shared list only) gets it with a NULL: every row is re-keyed once."""
    warehouse = tmp_path / "crm.duckdb"
    shutil.copyfile(daily_runs.warehouse, warehouse)
    stale = "update marts.fct_orders set customer_key = 'Cstale' where order_key = ?"
    with duckdb.connect(str(warehouse)) as con:
        ((order, customer),) = con.execute(
            "select order_key, customer_key from marts.fct_orders where customer_key is not null "
            "order by order_key limit 1"
        ).fetchall()
        con.execute(stale, [order]).fetchall()
        con.execute("insert into main.dbt_changed_customers values ('Cstale')").fetchall()  # a fact's note
    dbt("run", "--select", "fct_orders", warehouse=warehouse, target=tmp_path / "target")
    with duckdb.connect(str(warehouse)) as con:
        assert con.execute("select customer_key from marts.fct_orders where order_key = ?", [order]).fetchall() == [
            ("Cstale",)
        ]
        con.execute("insert into main.dbt_identity_changed_customers values ('Cstale')").fetchall()  # the map's
    dbt("run", "--select", "fct_orders", warehouse=warehouse, target=tmp_path / "target")
    with duckdb.connect(str(warehouse)) as con:
        assert con.execute("select customer_key from marts.fct_orders where order_key = ?", [order]).fetchall() == [
            (customer,)
        ]
        con.execute(stale, [order]).fetchall()
        con.execute("drop table main.dbt_identity_changed_customers").fetchall()
    dbt("run", "--select", "fct_orders", warehouse=warehouse, target=tmp_path / "target")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rekeyed = con.execute("select customer_key from marts.fct_orders where order_key = ?", [order]).fetchall()
        listed = con.execute("select customer_key from main.dbt_identity_changed_customers").fetchall()
    assert rekeyed == [(customer,)] and listed == [(None,)], (rekeyed, listed)


def test_dim_customer_rebuilds_only_the_customers_noted_or_with_a_newly_loaded_profile(
    daily_runs: DailyRuns, tmp_path: Path
) -> None:
    """A build of dim_customer rewrites every version of the customers on the list of changed
    customers and of those with a profile version loaded since its last build, notes the latter for
    customer_360, and leaves every other row as it is."""
    warehouse = tmp_path / "crm.duckdb"
    shutil.copyfile(daily_runs.warehouse, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        noted, profiled, other = (
            k
            for (k,) in con.execute(
                "select customer_key from marts.dim_customer where customer_ref is not null and source_loaded_at is not null "
                "group by 1 order by 1 limit 3"
            ).fetchall()
        )
        con.execute(
            "update marts.dim_customer set tier = 'planted' where customer_key in (?, ?, ?)", [noted, profiled, other]
        )
        con.execute("insert into main.dbt_changed_customers values (?)", [noted]).fetchall()
        con.execute(
            "update staging.stg_customers__profiles "
            "set source_loaded_at = (select max(source_loaded_at) from marts.dim_customer) + interval 1 second "
            "where concat('profile:', customer_ref) in "
            "(select record_key from marts.customer_identity_map where customer_key = ?)",
            [profiled],
        ).fetchall()
    dbt("run", "--select", "dim_customer", warehouse=warehouse, target=tmp_path / "target")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        planted = dict(
            con.execute(
                "select customer_key, bool_or(tier is not distinct from 'planted') from marts.dim_customer "
                "where customer_key in (?, ?, ?) group by 1",
                [noted, profiled, other],
            ).fetchall()
        )
        listed = {k for (k,) in con.execute("select customer_key from main.dbt_changed_customers").fetchall()}
    assert planted == {noted: False, profiled: False, other: True}, planted
    assert {noted, profiled} <= listed and other not in listed


def test_daily_data_tests_check_only_rows_loaded_since_the_last_fully_tested_build(
    daily_runs: DailyRuns, tmp_path: Path
) -> None:
    """A value or key test on a loaded table checks the rows loaded since the table's last build that
    ran every such test of it and passed (a key test: the rows sharing a key with them); the weekly
    full-test day (and a full refresh) checks every row."""
    warehouse = tmp_path / "crm.duckdb"
    shutil.copyfile(daily_runs.warehouse, warehouse)
    with duckdb.connect(str(warehouse)) as con:  # old rows go bad without a load: a null, a duplicate
        con.execute(
            "update intermediate.int_web_events_sessionized set cookie_id = null "
            "where web_event_id = (select min(web_event_id) from intermediate.int_web_events_sessionized)"
        ).fetchall()
        con.execute(
            "insert into intermediate.int_web_events_sessionized select * from intermediate.int_web_events_sessionized "
            "where web_event_id = (select max(web_event_id) from intermediate.int_web_events_sessionized)"
        ).fetchall()
    select = ["--select", "int_web_events_sessionized,test_name:not_null int_web_events_sessionized,test_name:unique"]
    dbt_test(select, warehouse, tmp_path / "target")
    full = dbt_test(select, warehouse, tmp_path / "target", full_test_day=True, ok=False)
    assert "FAIL 1 not_null_int_web_events_sessionized_cookie_id" in full
    assert "FAIL 1 unique_int_web_events_sessionized_web_event_id" in full
    # The failed run did not move the mark: a daily run still skips only rows tested before.
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tested, newest = con.execute(
            "select (select tested_through from main.dbt_tested_loads "
            "        where relation = 'intermediate.int_web_events_sessionized'), "
            "(select max(source_loaded_at) from intermediate.int_web_events_sessionized)"
        ).fetchall()[0]
    assert tested == newest  # the last daily run ran every test and passed


def test_daily_reconciliations_with_raw_compare_the_dates_rebuilt_and_a_failure_keeps_the_mark(
    daily_runs: DailyRuns, tmp_path: Path
) -> None:
    """A daily run reconciles the store and web lines with raw on the dates holding lines loaded since
    fct_order_lines' mark: a wrong line on an older date is found on the full-test day, one on such
    a date by the daily run, whose failure leaves the mark where it was."""
    warehouse = tmp_path / "crm.duckdb"
    shutil.copyfile(daily_runs.warehouse, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        (first, last), *_ = con.execute(
            "select min(ordered_local_date), max(ordered_local_date) from marts.fct_order_lines where channel = 'store'"
        ).fetchall()
        for day in (first, last):  # one line each, doubled in the mart
            con.execute(
                "update marts.fct_order_lines set quantity = 2 * quantity where order_line_id = "
                "(select min(order_line_id) from marts.fct_order_lines where channel = 'store' and ordered_local_date = ?)",
                [day],
            ).fetchall()
        # the mark as if the lines of the last date had been loaded since it
        (mark,) = con.execute(
            "select min(source_loaded_at) - interval 1 second from marts.fct_order_lines where ordered_local_date = ?",
            [last],
        ).fetchall()[0]
        con.execute(
            "update main.dbt_tested_loads set tested_through = ? where relation = 'marts.fct_order_lines'", [mark]
        ).fetchall()
        rebuilt = {
            d
            for (d,) in con.execute(
                "select distinct ordered_local_date from marts.fct_order_lines where source_loaded_at > ?", [mark]
            ).fetchall()
        }
    assert last in rebuilt and first not in rebuilt
    select = ["--select", "fct_order_lines"]  # its generic tests pass: the singular test alone holds the mark
    test = "FAIL 1 assert_store_lines_reconcile_with_raw"
    daily = dbt_test(select, warehouse, tmp_path / "t", ok=False)
    assert test in daily and "PASS assert_web_purchases_reconcile_with_raw" in daily
    with duckdb.connect(str(warehouse), read_only=True) as con:
        kept = con.execute(
            "select tested_through from main.dbt_tested_loads where relation = 'marts.fct_order_lines'"
        ).fetchall()
    assert kept == [(mark,)]  # not moved past the failed date

    with duckdb.connect(str(warehouse)) as con:  # the last date right again: only the old one is wrong
        con.execute(
            "update marts.fct_order_lines set quantity = quantity / 2 where order_line_id = "
            "(select min(order_line_id) from marts.fct_order_lines where channel = 'store' and ordered_local_date = ?)",
            [last],
        ).fetchall()
    assert test not in dbt_test(select, warehouse, tmp_path / "t")
    assert test in dbt_test(select, warehouse, tmp_path / "t", full_test_day=True, ok=False)


def test_daily_customer_relationships_check_the_rows_loaded_since_and_the_customers_changed(
    daily_runs: DailyRuns, tmp_path: Path
) -> None:
    """An old order whose customer is gone from dim_customer, on no changed customer, is not read by a
    daily run's relationships test; it fails once the run noted that customer as changed (as a
    merge, a re-key or a rebuild notes it), and on the full-test day."""
    warehouse = tmp_path / "crm.duckdb"
    shutil.copyfile(daily_runs.warehouse, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        ((order,),) = con.execute(
            "select order_key from marts.fct_orders where customer_key is not null "
            "order by source_loaded_at, order_key limit 1"
        ).fetchall()
        con.execute("update marts.fct_orders set customer_key = 'Cgone' where order_key = ?", [order]).fetchall()
    select = ["--select", "fct_orders,test_name:relationships,test_type:generic"]
    test = "FAIL 1 relationships_fct_orders_customer_key__customer_key__ref_dim_customer_"
    daily = dbt_test(select, warehouse, tmp_path / "t")
    assert "relationships_fct_orders_customer_key" in daily and test not in daily
    with duckdb.connect(str(warehouse)) as con:
        con.execute("insert into main.dbt_changed_customers values ('Cgone')").fetchall()
    assert test in dbt_test(select, warehouse, tmp_path / "t", ok=False)
    with duckdb.connect(str(warehouse)) as con:
        con.execute("delete from main.dbt_changed_customers").fetchall()
    assert test in dbt_test(select, warehouse, tmp_path / "t", full_test_day=True, ok=False)


def test_fuzzy_pairs_are_scored_again_only_for_profiles_loaded_since(grown: Grown, next_days: NextDays) -> None:
    """The next days' run searched again only the pairs of profiles loaded since the midway, scored
    the kept pairs again with its model, and so equals a full refresh: same pairs, probabilities
    and decisions."""
    pairs = (
        "SELECT customer_ref_l, customer_ref_r, match_probability, is_accepted FROM intermediate.int_profiles_matched"
    )
    with duckdb.connect(str(grown.midway), read_only=True) as con:
        before = {(left, right): (p, a) for left, right, p, a in con.execute(pairs).fetchall()}
        scored_through = con.execute(
            "SELECT max(profiles_loaded_at) FROM intermediate.int_profiles_matched"
        ).fetchall()[0][0]
    with duckdb.connect(str(next_days.warehouse), read_only=True) as con:
        after = {(left, right): (p, a) for left, right, p, a in con.execute(pairs).fetchall()}
        changed = {
            r
            for (r,) in con.execute(
                "SELECT DISTINCT customer_ref FROM staging.stg_customers__profiles WHERE timezone('UTC', source_loaded_at) > ?",
                [scored_through],
            ).fetchall()
        }
    kept = {pair for pair in before if not set(pair) & changed}
    assert kept and kept <= after.keys()
    assert any(set(pair) & changed for pair in after)

    with duckdb.connect(str(next_days.refreshed), read_only=True) as con:
        refreshed = {(left, right): (p, a) for left, right, p, a in con.execute(pairs).fetchall()}
    # u is measured again on every run that scores, here on a registry that grew by a quarter: the
    # kept pairs are scored again with it, so probabilities and decisions equal a full refresh's.
    assert refreshed.keys() == after.keys()
    assert all(
        refreshed[pair][1] == after[pair][1] and abs(refreshed[pair][0] - after[pair][0]) < 1e-9 for pair in after
    )


def test_the_benchmarks_sql_floor_builds_the_same_marts(grown: Grown, tmp_path: Path) -> None:
    """bench/floor.py: the models as one plain DuckDB script give the marts the pipeline built."""
    from bench.floor import floor_vs_built

    floor = floor_vs_built(grown.warehouse, tmp_path / "floor")
    assert floor["equal"], {
        t: m for t, m in floor["marts"].items() if m["columns_differing"] or m["rows"] != m["built_rows"]
    }
    assert len(floor["marts"]) == 13 and all(m["rows"] > 0 for m in floor["marts"].values())
    script = Path(floor["script"]).read_text()
    assert script.count("CREATE OR REPLACE TABLE") >= 13 and "{{" not in script  # compiled SQL, no Jinja left
