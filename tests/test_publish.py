"""Publishing on real DuckDB files: the copy in byte ranges is the file, and the versions a publish
pushes out go while it copies, never the current one, also when the publish fails."""

from __future__ import annotations

import datetime as dt
import filecmp
import os
from pathlib import Path

import duckdb
import pytest

from serving import publish


def build_file(path: Path, rows: int) -> Path:
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA marts")
        con.execute(f"CREATE OR REPLACE TABLE marts.facts AS SELECT range AS id, random() AS x FROM range({rows})")
        con.execute("CHECKPOINT")
    return path


def published_alone(build: Path, published: Path, run_id: str, day: dt.date, **options) -> publish.Publication:
    with publish.publishing(build, published, run_id, day, **options) as pending:
        pass  # nothing reads the build file meanwhile
    return pending.publication()


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_a_copy_in_byte_ranges_is_the_file(tmp_path: Path, parts: int) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(1_000_003))  # not a multiple of any part count
    publish.copy_file(source, tmp_path / "copy.bin", parts)
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()


def test_publishing_keeps_the_newest_versions_and_a_failed_one_keeps_the_current(tmp_path: Path) -> None:
    build, published = build_file(tmp_path / "crm.duckdb", 50_000), tmp_path / "published"
    day = dt.date(2025, 1, 1)
    pubs = [published_alone(build, published, f"run-{n}", day, keep=2, copy_parts=2) for n in range(3)]
    assert [p.pruned for p in pubs] == [[], [], ["000001.duckdb"]]
    assert [p.name for p in publish.versions(published)] == ["000002.duckdb", "000003.duckdb"]
    with publish.connect(published) as con:
        assert con.execute("SELECT version, run_id FROM serving.publication").fetchall() == [(3, "run-2")]
        assert con.execute("SELECT count(*) FROM marts.facts").fetchall() == [(50_000,)]

    def broken(con: duckdb.DuckDBPyConnection) -> None:
        raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError, match="the change failed"):
        publish.add_version(build, published, "run-3", day, keep=2, change=broken, copy_parts=2)
    # The current version is untouched; the one the failed publish would have pushed out has gone.
    assert publish.current(published).name == "000003.duckdb"
    assert [p.name for p in publish.versions(published)] == ["000003.duckdb"]
    assert not list((published / publish.VERSIONS).glob(".*.partial"))


def test_while_a_version_is_copied_the_build_file_is_that_version_and_nothing_points_at_it_before(
    tmp_path: Path,
) -> None:
    build, published = build_file(tmp_path / "crm.duckdb", 50_000), tmp_path / "published"
    day = dt.date(2025, 1, 1)
    published_alone(build, published, "run-1", day)
    with publish.publishing(build, published, "run-2", day, copy_parts=2) as pending:
        with pending.build.connect() as con:  # read while the copy runs, as the export and the report do
            assert con.execute("SELECT version, run_id FROM serving.publication").fetchall() == [(2, "run-2")]
        pending.build.published()  # returns once the version is current
        assert publish.current(published).name == "000002.duckdb"
    assert filecmp.cmp(build, publish.current(published), shallow=False)
    assert pending.publication().row_counts == {"marts.facts": 50_000} and pending.publication().seconds > 0

    # A copy that fails: the readers learn it, nothing is switched, the next publish numbers on.
    (published / publish.VERSIONS / ".000003.partial").mkdir()
    with pytest.raises(IsADirectoryError), publish.publishing(build, published, "run-3", day) as pending:
        with pytest.raises(IsADirectoryError):
            pending.build.published()
    assert publish.current(published).name == "000002.duckdb"
    (published / publish.VERSIONS / ".000003.partial").rmdir()
    assert published_alone(build, published, "run-4", day).version == 3
