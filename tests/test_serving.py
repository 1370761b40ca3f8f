"""Serving for real: analysts query published versions in another process while runs write the
build file; a killed run leaves the published version as it was; `crm sql` and the ten queries."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ingestion.generator import GeneratorConfig
from orchestration.run import PID_TAG, run_pipeline
from orchestration.settings import REPO_ROOT, Settings
from serving import publish
from tests.conftest import Grown, sources_for

pytestmark = pytest.mark.slow  # every test here runs the pipeline or reads its warehouse

QUERIES = REPO_ROOT / "warehouse" / "queries"

# Run in another process for the whole of a run: each query opens the current version, reads three
# tables and the counts the version recorded when it was published, and writes one JSON line.
READER = textwrap.dedent("""
    import json, sys, time, pathlib
    from serving import publish
    published, out, stop = pathlib.Path(sys.argv[1]), open(sys.argv[2], "a"), pathlib.Path(sys.argv[3])
    while not stop.exists():
        try:
            with publish.connect(published) as con:
                row = con.execute('''
                    SELECT (SELECT version FROM serving.publication),
                           (SELECT count(*) FROM marts.fct_order_lines),
                           (SELECT row_count FROM serving.table_counts WHERE table_name = 'marts.fct_order_lines'),
                           (SELECT count(*) FROM marts.dim_customer),
                           (SELECT row_count FROM serving.table_counts WHERE table_name = 'marts.dim_customer'),
                           (SELECT count(*) FROM ml.rfm_segments),
                           (SELECT row_count FROM serving.table_counts WHERE table_name = 'ml.rfm_segments'),
                           (SELECT sum(hash(order_line_id)) FROM marts.fct_order_lines)::VARCHAR''').fetchall()[0]
            out.write(json.dumps({"ok": True, "row": list(row)}) + "\\n")
        except Exception as e:
            out.write(json.dumps({"ok": False, "error": repr(e)}) + "\\n")
        out.flush()
        time.sleep(0.05)
""")


def checksum(database: Path) -> dict[str, tuple[int, int]]:
    """(rows, order-independent hash of every row) of every served table of a database file."""
    with duckdb.connect(str(database), read_only=True) as con:
        return {
            f"{s}.{t}": tuple(
                con.execute(f'SELECT count(*), coalesce(sum(hash("{t}")), 0) FROM "{s}"."{t}" AS "{t}"').fetchall()[0]
            )
            for s, t in publish.served_tables(con)
        }


def crm(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        **kwargs,
    )


def test_analysts_read_whole_versions_during_a_run_and_a_killed_run_publishes_nothing(
    sample: GeneratorConfig, tmp_path: Path
) -> None:
    sources = sources_for(sample.extracts, tmp_path / "sources.yml", sample.start)
    warehouse = tmp_path / "crm.duckdb"
    published = tmp_path / "published"
    run_pipeline(Settings.load(sources, warehouse), as_of=sample.start + dt.timedelta(days=20))
    assert publish.current(published).name == "000001.duckdb"

    env = {"CRM_SOURCES": str(sources), "CRM_WAREHOUSE": str(warehouse), "PYTHONPATH": str(REPO_ROOT)}
    log, stop = tmp_path / "reads.jsonl", tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(published), str(log), str(stop)], cwd=REPO_ROOT, env={**os.environ, **env}
    )
    try:
        # The rest of the data, in another process, as `.venv/bin/crm run` without the environment's
        # bin/ on PATH: dbt is found beside this Python.
        run = crm(
            "run",
            env={
                **env,
                "PATH": os.pathsep.join(
                    d
                    for d in os.environ["PATH"].split(os.pathsep)
                    if Path(d).resolve() != Path(sys.executable).parent.resolve()
                ),
            },
        )
        assert run.returncode == 0, run.stderr
        # dbt's lines went to the run's log beside the warehouse, not between crm's progress and table.
        assert "PASS=" not in run.stdout + run.stderr and "dbt's output:" in run.stderr
        assert "Completed successfully" in next((tmp_path / "logs").glob("crm-run-*.log")).read_text()
        time.sleep(1.0)  # a few reads of the new version
    finally:
        stop.touch()
        reader.wait(timeout=60)
    reads = [json.loads(line) for line in log.read_text().splitlines()]
    assert reads and all(r["ok"] for r in reads), [r for r in reads if not r["ok"]][:3]
    versions = {}
    for r in reads:
        version, lines, lines_recorded, customers, customers_recorded, rfm, rfm_recorded, digest = r["row"]
        assert (lines, customers, rfm) == (lines_recorded, customers_recorded, rfm_recorded)  # one whole version
        versions.setdefault(version, set()).add((lines, customers, rfm, digest))
    assert set(versions) == {1, 2} and all(len(v) == 1 for v in versions.values()), versions
    assert versions[1] != versions[2]  # the second version has more data, and readers saw it switch in
    assert len(reads) > 100

    # Kill a full rebuild while dbt writes the build file: the published version stays as it was.
    before, link = checksum(publish.current(published)), os.readlink(published / publish.CURRENT)
    logs = tmp_path / "logs"
    earlier = set(logs.glob("*.log"))
    killed = subprocess.Popen(
        [sys.executable, "-m", "orchestration.cli", "run", "--full-refresh"],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not _dbt_building(logs, earlier):
        time.sleep(0.2)
    assert _dbt_building(logs, earlier), "the run never reached dbt"
    time.sleep(2)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert os.readlink(published / publish.CURRENT) == link
    assert checksum(publish.current(published)) == before
    assert [p.name for p in publish.versions(published)] == ["000001.duckdb", "000002.duckdb"]
    # The next run recovers the build file and publishes again.
    again = crm("run", env=env)
    assert again.returncode == 0, again.stderr
    assert publish.current(published).name == "000003.duckdb"
    with dg.DagsterInstance.get() as instance:  # the killed run was marked failed and its pool slot freed
        killed_runs = instance.get_runs(filters=dg.RunsFilter(tags={PID_TAG: str(killed.pid)}))
        assert {r.job_name: r.status for r in killed_runs}["build_warehouse"] == dg.DagsterRunStatus.FAILURE

    def rows(sums: dict) -> dict:  # rows carry their load time and run id
        return {t: n for t, (n, _) in sums.items()}

    assert rows(checksum(publish.current(published))) == rows(before)  # same data, same rows


def _dbt_building(logs: Path, earlier: set[Path]) -> bool:
    """Whether a run's new log (dbt writes its lines there, from the run's own process) shows dbt
    building a model: the run is in its dbt step, writing the build file."""
    return any("START sql" in log.read_text(errors="replace") for log in set(logs.glob("*.log")) - earlier)


@pytest.fixture(scope="module")
def analyst_env(grown: Grown) -> dict[str, str]:
    return {"CRM_WAREHOUSE": str(grown.warehouse), "CRM_SOURCES": str(grown.sources)}


def test_crm_sql_reads_the_published_version_as_table_csv_and_json(grown: Grown, analyst_env: dict[str, str]) -> None:
    query = (
        "SELECT channel, count(*) AS orders, sum(net_amount) AS revenue FROM marts.fct_orders GROUP BY ALL ORDER BY 1"
    )
    table = crm("sql", query, env=analyst_env)
    assert table.returncode == 0, table.stderr
    assert "decimal" in table.stdout and "store" in table.stdout
    as_json = json.loads(crm("sql", query, "--format", "json", env=analyst_env).stdout)
    with duckdb.connect(str(grown.warehouse), read_only=True) as con:
        expected = con.execute(query).fetchall()
    assert [(r["channel"], r["orders"], r["revenue"]) for r in as_json] == [(c, n, str(v)) for c, n, v in expected]
    as_csv = crm("sql", query, "-f", "csv", env=analyst_env).stdout.splitlines()
    assert as_csv[0] == "channel,orders,revenue" and len(as_csv) == len(expected) + 1
    shell = crm("sql", env=analyst_env, input="SELECT count(*) AS n\nFROM marts.dim_customer;\n.quit\n")
    assert shell.returncode == 0 and "│" in shell.stdout
    bad = crm("sql", "SELECT * FROM no_such_table", env=analyst_env)
    assert bad.returncode == 1 and "no_such_table" in bad.stderr
    # Read-only: analysts cannot change a published version.
    write = crm("sql", "DELETE FROM marts.fct_orders", env=analyst_env)
    assert write.returncode == 1 and "read-only" in write.stderr.lower()
