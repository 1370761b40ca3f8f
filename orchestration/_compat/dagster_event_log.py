"""Dagster's SQLite event log, writing a partition range's materializations in one transaction,
on connections it keeps open.

A `crm run` over a year of daily partitions reports one materialization per day and source: 1,830
for five sources. The stock SQLite storage writes each one on fresh connections to two databases
(the run's and the cross-run index): a fixed cost per day and source that dominated small runs.
When DAGSTER_EVENT_BATCH_SIZE is set (settings.hand_to_processes sets it), Dagster hands a
step's partition materializations over as one batch; this storage writes such a batch with one
statement per table and one transaction per database. The rows are the stock storage's, so the UI,
sensors and `dagster` CLI read them unchanged; anything else is stored the stock way.

The stock storage also opens a new engine and connection for every statement it runs (every event,
planned check, log line). This one keeps one engine,
with its pooled SQLite connection, for the index and for the few runs last written; SQLite locks
per transaction, not per connection, so other processes are not kept out.
"""

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from dagster import _check as check
from dagster._config import Field, StringSource
from dagster._core.events import ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS, create_db_conn_string
from dagster._serdes import ConfigurableClassData
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.event import listen

OPEN_RUN_SHARDS = 2  # run databases kept open besides the index: the run being written, and one more


class BatchingSqliteEventLogStorage(SqliteEventLogStorage):
    """The default SQLite event log (same files under $DAGSTER_HOME/history/runs/), batch-aware."""

    def __init__(self, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None):
        home = check.not_none(os.environ.get("DAGSTER_HOME"), "DAGSTER_HOME is not set") if base_dir is None else ""
        self._engines: OrderedDict[str, Engine] = OrderedDict()  # before the stock set-up, which may connect
        super().__init__(base_dir or os.path.join(home, "history", "runs", ""), inst_data=inst_data)

    @classmethod
    def config_type(cls) -> dict:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: dict
    ) -> "BatchingSqliteEventLogStorage":
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        """The stock `_connect` (one transaction under the storage's lock) on a kept engine."""
        with self._db_lock:
            engine = self._engine(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _engine(self, shard: str) -> Engine:
        if shard in self._engines:
            self._engines.move_to_end(shard)
            return self._engines[shard]
        engine = create_engine(
            create_db_conn_string(self._base_dir, shard), connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
        )
        listen(engine, "connect", _synced_at_checkpoints)
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        self._engines[shard] = engine
        runs = [s for s in self._engines if s != INDEX_SHARD_NAME]
        for old in runs[:-OPEN_RUN_SHARDS]:
            self._engines.pop(old).dispose()
        return engine

    def _close_engines(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def wipe(self) -> None:
        self._close_engines()  # before the run databases are deleted
        super().wipe()

    def dispose(self) -> None:
        self._close_engines()
        super().dispose()

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        if not _one_run_of_asset_events(events):
            super().store_event_batch(events)  # one by one, as Dagster does
            return
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(self.prepare_insert_event_batch(events))
        # The index mirrors each event under its own id; tags and the asset's latest record
        # refer to those ids, so the inserts go one by one, inside one transaction.
        with self.index_transaction() as conn:
            ids = [conn.execute(self.prepare_insert_event(e)).inserted_primary_key[0] for e in events]
            self._store_asset_event_tags(conn, events, ids)
            for event, event_id in zip(events, ids):
                self._store_asset_event(conn, event, event_id)


def _synced_at_checkpoints(connection: object, _record: object) -> None:
    """SQLite's `synchronous = NORMAL` on Dagster's WAL journal: a commit waits for no disk sync (a
    day's build commits about 650 events one by one, and each waited for one); a killed process
    loses nothing, a power cut at most the events since the last checkpoint."""
    connection.execute("pragma synchronous = normal")  # type: ignore[attr-defined]


def _one_run_of_asset_events(events: Sequence[EventLogEntry]) -> bool:
    """What the stock store_event does with asset events, and only with them, this storage batches."""
    return (
        bool(events)
        and len({e.run_id for e in events}) == 1
        and all(
            e.is_dagster_event and e.dagster_event_type in ASSET_EVENTS and e.get_dagster_event().asset_key
            for e in events
        )
    )
