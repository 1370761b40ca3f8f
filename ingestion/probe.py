"""How far a source's data reaches, found cheaply, so a run's default as-of is the data's last day
(never today's date): dates in file names where every file has one, else a scan of the event time."""

from __future__ import annotations

import datetime as dt

import duckdb

from ingestion.conform import conform_sql
from ingestion.load import name_date
from ingestion.read import read_files
from ingestion.sources import Source


def latest_event_date(source: Source, last_partition: dt.date) -> dt.date | None:
    """The last day (at most `last_partition`) on which `source` has events; None without data."""
    return _event_day(source, "max", last_partition)


def earliest_event_date(source: Source) -> dt.date | None:
    """The first day on which `source` has events; None without data."""
    return _event_day(source, "min", None)


def _event_day(source: Source, pick: str, last_partition: dt.date | None) -> dt.date | None:
    """min or max of the source's event days: from file names where they carry a date, else from
    the events (at most `last_partition`)."""
    files = source.files()
    named = {p: name_date(p) for p in files}
    days = [d for d in named.values() if d is not None and (last_partition is None or d <= last_partition)]
    unnamed = [p for p, d in named.items() if d is None]
    if unnamed:
        with duckdb.connect() as con:
            con.execute("SET TimeZone = 'UTC'")
            read, _ = read_files(con, source, unnamed, "_probe")
            if read is not None:
                tz = source.timezone.replace("'", "''")
                scanned = con.execute(
                    f"SELECT {pick}(d) FROM (SELECT CAST(timezone('{tz}', {source.contract.event_time}) AS DATE) AS d "
                    f"FROM ({conform_sql(source, read)})) WHERE d <= coalesce(?, d)",
                    [last_partition],
                ).fetchall()[0][0]
                if scanned:
                    days.append(scanned)
    return (max if pick == "max" else min)(days) if days else None
