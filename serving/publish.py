"""Publish the build database as an immutable, read-only version, switched in atomically.

DuckDB allows one writer per file and that writer locks readers out, so the pipeline writes
`warehouse/crm.duckdb` (the build file) and analysts never open it. After a run's assets and checks
succeed, the version is described in the build file (`serving.publication`), the build file is
copied to `published/versions/<version>.duckdb` and the symlink `published/current.duckdb` is
replaced by one pointing at it (`rename` is atomic). A reader resolves the link once, so it sees one
whole version; a failed or killed run never reaches this step and leaves `current.duckdb` as it
was. While the copy runs, the run's own export and report read the build file, which holds the
version byte for byte, and point at what they wrote only once the version is current.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb

CURRENT = "current.duckdb"
VERSIONS = "versions"
# Tables a published version describes in serving.table_counts: what analysts and exports read.
SERVED_SCHEMAS = ("marts", "ml")
Edited = TypeVar("Edited")


@dataclass(frozen=True)
class Publication:
    version: int
    path: Path
    run_id: str
    as_of_date: dt.date | None
    published_at: dt.datetime
    row_counts: dict[str, int]  # "schema.table" -> rows
    size_bytes: int
    pruned: list[str]
    seconds: float  # from its description to the switch


class NothingPublished(FileNotFoundError):
    """No version has been published in this folder yet."""


def current(published_dir: Path) -> Path:
    """The file of the current version (the link resolved), for one consistent read."""
    link = published_dir / CURRENT
    if not link.is_symlink():
        raise NothingPublished(f"nothing published in {published_dir} yet: run `crm run` first")
    return link.resolve(strict=True)


def connect(published_dir: Path, config: dict | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the current version; it keeps reading that version to the end.
    `config`: DuckDB's settings (memory, threads); connections of one process to one file share them."""
    return readable_current(published_dir).connect(config)


def has_table(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """Whether the version holds `schema`.`table` (a table not built, e.g. an ML table without history, is absent)."""
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?", [schema, table]
        ).fetchall()[0][0]
    )


def served_tables(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """(schema, table) of every base table analysts and BI tools are served, in a stable order."""
    return con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' AND table_schema = ANY(?) ORDER BY 1, 2",
        [list(SERVED_SCHEMAS)],
    ).fetchall()


@dataclass(frozen=True)
class Readable:
    """A file holding, byte for byte, the version to read; `published()` returns once that version is
    current and raises if it never will be: whatever points at what was read from it waits for that."""

    path: Path
    published: Callable[[], object] = lambda: None

    def connect(self, config: dict | None = None) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(str(self.path), read_only=True, config=config or {})


def readable_current(published_dir: Path) -> Readable:
    """The current version, already published."""
    return Readable(current(published_dir))


class Pending:
    """A version described in the build file and being copied out of it (`publishing`)."""

    def __init__(self, build: Path, copied: Future[Publication]):
        self._copied = copied
        self.build = Readable(build, self.publication)  # the version, until the copy is switched in

    def publication(self) -> Publication:
        return self._copied.result()


@contextlib.contextmanager
def publishing(
    build: Path,
    published_dir: Path,
    run_id: str,
    as_of_date: dt.date | None,
    keep: int = 3,
    prepare: Callable[[duckdb.DuckDBPyConnection], object] | None = None,
    copy_parts: int = 1,
) -> Iterator[Pending]:
    """Describe the next version in the build file itself (`prepare(con)`, e.g. the region views,
    then `serving.publication`/`serving.table_counts`), then copy the file to that version and
    switch to it in a thread, while the block reads the build file (`Pending.build`): it holds the
    version byte for byte, so the export and the report need not wait for the copy, which waits on
    the disk. The block ends after the copy (its error, if any, is raised then).

    The caller guarantees no one writes the build file until then (the writer pool does). The
    build file keeps the `serving` and `scoped` schemas of the version it last became."""
    with _numbered(published_dir) as version:
        started = time.perf_counter()
        with duckdb.connect(str(build)) as con:
            if prepare is not None:
                prepare(con)
            published_at = dt.datetime.now(dt.UTC)
            counts = _describe(con, version, run_id, as_of_date, published_at)
            con.execute("CHECKPOINT")  # everything in the main file, nothing left in the WAL
        with ThreadPoolExecutor(max_workers=1) as copying:

            def copy_and_switch() -> Publication:
                final, pruned, _ = _install(build, published_dir, version, keep, copy_parts, lambda _: None)
                size, seconds = final.stat().st_size, time.perf_counter() - started
                return Publication(version, final, run_id, as_of_date, published_at, counts, size, pruned, seconds)

            pending = Pending(build, copying.submit(copy_and_switch))
            yield pending
        pending.publication()


def add_version(
    source: Path,
    published_dir: Path,
    run_id: str,
    as_of_date: dt.date | None,
    keep: int = 3,
    change: Callable[[duckdb.DuckDBPyConnection], object] | None = None,
    copy_parts: int = 1,
) -> Publication:
    """Copy `source` to the next version, let `change(con)` edit the copy (erasure does), record
    what it holds in `serving.publication`/`serving.table_counts`, then switch to it and prune."""

    def described(partial: Path) -> tuple[dt.datetime, dict[str, int]]:
        with duckdb.connect(str(partial)) as con:
            if change is not None:
                change(con)
            published_at = dt.datetime.now(dt.UTC)
            counts = _describe(con, version, run_id, as_of_date, published_at)
            con.execute("CHECKPOINT")
        return published_at, counts

    with _numbered(published_dir) as version:
        started = time.perf_counter()
        final, pruned, (published_at, counts) = _install(source, published_dir, version, keep, copy_parts, described)
        seconds = time.perf_counter() - started
    return Publication(version, final, run_id, as_of_date, published_at, counts, final.stat().st_size, pruned, seconds)


@contextlib.contextmanager
def _numbered(published_dir: Path) -> Iterator[int]:
    """The next version's number, held until the block ends: a publish and an erasure never number
    or switch at once."""
    versions = published_dir / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    with open(published_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield 1 + max((int(p.stem) for p in versions.glob("*.duckdb") if p.stem.isdigit()), default=0)


def _install(
    source: Path, published_dir: Path, version: int, keep: int, copy_parts: int, edit: Callable[[Path], Edited]
) -> tuple[Path, list[str], Edited]:
    """Copy `source` to the version's file, `edit` the copy, make it durable, switch to it, prune.

    The versions the new one will push out of the `keep` newest are deleted while it is copied:
    deleting a file of gigabytes drops its cached pages, seconds of the kernel's time that the
    copy would otherwise wait for. A publish that fails after has still deleted them, never the
    current version."""
    final = published_dir / VERSIONS / f"{version:06d}.duckdb"
    partial = published_dir / VERSIONS / f".{version:06d}.partial"
    early = keep > 1 and (published_dir / CURRENT).is_symlink()
    try:
        with ThreadPoolExecutor(max_workers=1) as pruning:
            pruned_early = pruning.submit(prune, published_dir, keep - 1) if early else None
            copy_file(source, partial, copy_parts)
            pruned = pruned_early.result() if pruned_early else []
        edited = edit(partial)
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    switch_link(published_dir / CURRENT, Path(VERSIONS) / final.name)
    return final, pruned + prune(published_dir, keep), edited


def _describe(
    con: duckdb.DuckDBPyConnection, version: int, run_id: str, as_of_date: dt.date | None, published_at: dt.datetime
) -> dict[str, int]:
    counts = {
        f"{s}.{t}": con.execute(f'SELECT count(*) FROM "{s}"."{t}"').fetchall()[0][0] for s, t in served_tables(con)
    }
    con.execute(
        """
        CREATE SCHEMA IF NOT EXISTS serving;
        CREATE OR REPLACE TABLE serving.publication (
            version INTEGER, run_id VARCHAR, as_of_date DATE, published_at TIMESTAMPTZ);
        CREATE OR REPLACE TABLE serving.table_counts (table_name VARCHAR, row_count BIGINT);
        """
    )
    con.execute("INSERT INTO serving.publication VALUES (?, ?, ?, ?)", [version, run_id, as_of_date, published_at])
    if counts:
        con.executemany("INSERT INTO serving.table_counts VALUES (?, ?)", list(counts.items()))
    return counts


def copy_file(source: Path, target: Path, parts: int = 1) -> None:
    """`source` to `target`, in `parts` byte ranges copied side by side by the kernel
    (copy_file_range): copying a file in the page cache is CPU-bound, one core per range."""
    size = source.stat().st_size
    if parts <= 1 or not hasattr(os, "copy_file_range"):
        shutil.copyfile(source, target)
        return
    step = max(-(-size // parts), 1)
    with open(source, "rb") as src, open(target, "wb") as dst:
        os.ftruncate(dst.fileno(), size)

        def copy_range(start: int) -> None:
            offset, end = start, min(start + step, size)
            while offset < end:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), end - offset, offset, offset)
                if copied == 0:
                    raise OSError(f"{source} ended at byte {offset} while being copied; it was {size} bytes")
                offset += copied

        try:
            with ThreadPoolExecutor(max_workers=parts) as pool:
                list(pool.map(copy_range, range(0, size, step)))
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            # A file system (or pair of them) that cannot copy ranges in the kernel: one stream.
            shutil.copyfile(source, target)


def switch_link(link: Path, target: Path) -> None:
    """Point `link` at `target` atomically: a new link renamed over the old one."""
    temporary = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}")
    os.symlink(target, temporary)
    os.replace(temporary, link)


def prune(published_dir: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` versions (never the current one). A reader that has an old
    version open keeps reading it: the file goes when the last reader closes it."""
    kept = versions(published_dir)
    live = current(published_dir)
    doomed = [p for p in kept[: max(len(kept) - max(keep, 1), 0)] if p.resolve() != live]
    for p in doomed:
        p.unlink()
    return [p.name for p in doomed]


def versions(published_dir: Path) -> list[Path]:
    """Every kept version, oldest first."""
    return sorted(p for p in (published_dir / VERSIONS).glob("*.duckdb") if p.stem.isdigit())
