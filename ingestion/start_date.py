"""The first partition day when the sources file does not name one (`partitions.start_date`): the
earliest event in the files, inferred on the first run and recorded beside the warehouse, so that
later runs keep the same partitions without scanning the files again."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

from ingestion.probe import earliest_event_date
from ingestion.sources import SourcesConfig, SourcesError


def start_date_record(warehouse: Path) -> Path:
    return warehouse.with_name(warehouse.name + ".start_date.json")


def with_start_date(config: SourcesConfig, warehouse: Path) -> tuple[SourcesConfig, str | None]:
    """`config` with its start date: as the sources file gives it; else as recorded for this
    warehouse; else inferred from the files and recorded. The second value says what was inferred."""
    if config.start_date is not None:
        return config, None
    record = start_date_record(warehouse)
    if record.exists():
        return dataclasses.replace(
            config, start_date=dt.date.fromisoformat(json.loads(record.read_text())["start_date"])
        ), None
    days = [d for d in (earliest_event_date(s) for s in config.sources) if d]
    if not days:
        raise SourcesError(
            f"{config.path}: partitions.start_date is not given and no file holds an event to infer it from"
        )
    start = min(days)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(
        json.dumps(
            {
                "start_date": start.isoformat(),
                "sources_file": str(config.path),
                "inferred_at": dt.datetime.now(dt.UTC).isoformat(),
            },
            indent=2,
        )
        + "\n"
    )
    return dataclasses.replace(config, start_date=start), (
        f"partitions start on {start}, the earliest event in the files (partitions.start_date is not given); "
        f"recorded in {record}"
    )
