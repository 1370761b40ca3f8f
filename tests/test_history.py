"""Data from any era: a 1990s store history, with no partitions.start_date in its sources file,
builds every mart and ML table and publishes; dim_date spans what the data holds."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest
import yaml

from ingestion.generator import GeneratorConfig, generate, sources_file_for
from ingestion.start_date import start_date_record
from ml.tables import TABLES
from orchestration.run import run_pipeline
from orchestration.settings import Settings
from serving import publish


@pytest.mark.slow
def test_a_1990s_history_builds_every_table_and_publishes(tmp_path: Path) -> None:
    cfg = GeneratorConfig(out=tmp_path / "sample", customers=1200, days=330, seed=11, start=dt.date(1997, 3, 1))
    generate(cfg)
    sources = sources_file_for(cfg.extracts, tmp_path / "sources.yml", cfg.start)
    doc = yaml.safe_load(sources.read_text())
    del doc["partitions"]["start_date"]  # the files say when their data starts
    sources.write_text(yaml.safe_dump(doc, sort_keys=False))
    warehouse = tmp_path / "crm.duckdb"

    summary = run_pipeline(Settings.load(sources, warehouse))
    assert summary.start == cfg.start and any("earliest event" in n for n in summary.notes), summary.notes
    assert start_date_record(warehouse).exists()
    assert all(summary.checks.values()), {k: v for k, v in summary.checks.items() if not v}
    with duckdb.connect(str(publish.current(tmp_path / "published")), read_only=True) as con:
        first, last = con.execute("SELECT min(date_day), max(date_day) FROM marts.dim_date").fetchall()[0]
        assert first == dt.date(1997, 1, 1) and last.year >= 2000 and (last.month, last.day) == (12, 31)
        for table in (
            "fct_order_lines",
            "fct_orders",
            "fct_web_sessions",
            "fct_interactions",
            "customer_360",
            "dim_customer",
        ):
            assert con.execute(f"SELECT count(*) FROM marts.{table}").fetchall()[0][0] > 0, table
        years = con.execute("SELECT min(ordered_local_date), max(ordered_local_date) FROM marts.fct_orders").fetchall()[
            0
        ]
        assert years[0].year == 1997 and years[1].year == 1998
        for table in TABLES:
            assert con.execute(f"SELECT count(*) FROM ml.{table}").fetchall()[0][0] > 0, table

    # A second run keeps the recorded start: it does not scan the files again.
    assert run_pipeline(Settings.load(sources, warehouse)).notes == []
