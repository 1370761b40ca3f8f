"""Protection of customer data, on the grown sample after real Dagster runs: masked Parquet exports
read back with pyarrow, region scopes, consent audiences from SCD2 history, and erasure."""

from __future__ import annotations

import csv
import datetime as dt
import hmac
import json
import shutil
from hashlib import sha256
from pathlib import Path

import duckdb
import polars as pl
import polars.selectors as cs
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from ingestion.generator import GeneratorConfig
from orchestration.dbt_assets import dbt_project
from orchestration.run import run_pipeline
from orchestration.settings import Settings
from serving import publish
from serving.audience import audience_query
from serving.erasure import ERASED_RECORDS, ErasureRequest, find_customer_keys
from serving.export import ExportSpec, known_exports, read_manifest, write_export
from serving.masking import MaskingKeyMissing, personal_columns
from tests.conftest import Grown, repoint_lineage, sources_for
from tests.test_serving import crm

pytestmark = pytest.mark.slow  # every test here runs the pipeline or reads its warehouse


@pytest.fixture(scope="module")
def deployment(grown: Grown, sample: GeneratorConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the grown deployment: build file, published versions, exports, extracts."""
    root = tmp_path_factory.mktemp("governed") / "w"
    shutil.copytree(grown.warehouse.parent, root, symlinks=True)
    sources_for(root / "extracts", root / "sources.yml", sample.start)
    repoint_lineage(root / "crm.duckdb", grown.warehouse.parent / "extracts", root / "extracts")
    return root


@pytest.fixture(scope="module")
def env(deployment: Path) -> dict[str, str]:
    return {"CRM_WAREHOUSE": str(deployment / "crm.duckdb"), "CRM_SOURCES": str(deployment / "sources.yml")}


def masking_key(deployment: Path) -> str:
    """The key the deployment's runs hashed with (created beside its warehouse on the first run)."""
    return Settings.load(warehouse=deployment / "crm.duckdb", environ={}).masking_key()


def read_export(folder: Path) -> pa.Table:
    partitioning = "hive" if any("=" in p.name for p in folder.iterdir()) else None
    return ds.dataset(folder, format="parquet", partitioning=partitioning).to_table()


def read_current(folder: Path, table: str) -> pa.Table:
    """An exported table as a BI tool should read it (docs/serving.md): a keyed table's base rows
    replaced by its `row_changes`, a corrected fact's customer keys replaced by
    `customer_key_changes` where it has its identity record."""
    manifest = read_manifest(folder)
    exported = read_export(folder / table)
    if row_changes := manifest["tables"][table].get("row_changes"):
        changed, key = pl.from_arrow(read_export(folder / row_changes["path"])), row_changes["key"]
        kept = pl.from_arrow(exported).join(changed.select(key), on=key, how="anti")
        exported = pl.concat([kept, changed.filter(~pl.col("_deleted")).drop("_deleted")]).to_arrow()
    changes = manifest.get("customer_key_changes")
    if not changes or table not in changes["corrects"]:
        return exported
    fixes = pl.from_arrow(read_export(folder / changes["path"])).with_columns(changed=pl.lit(True))
    frame = pl.from_arrow(exported).join(fixes, on="identity_record_key", how="left", suffix="_now")
    current = pl.when(pl.col("changed")).then(pl.col("customer_key_now")).otherwise(pl.col("customer_key"))
    return frame.with_columns(customer_key=current).select(exported.column_names).to_arrow()


def _same_type(got: pa.DataType, expected: pa.DataType) -> bool:
    """Equal types; zone-aware timestamps agree whatever the zone's name (UTC, Etc/UTC)."""
    if pa.types.is_timestamp(got) and pa.types.is_timestamp(expected):
        return got.unit == expected.unit and (got.tz is None) == (expected.tz is None)
    if pa.types.is_large_string(got) or pa.types.is_string_view(got):
        got = pa.string()
    return got == expected


def _utc(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(cs.datetime(time_zone="*").dt.convert_time_zone("UTC"))


def published_table(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> pa.Table:
    table_or_reader = con.sql(f'SELECT * FROM "{schema}"."{table}"').arrow()
    return table_or_reader.read_all() if hasattr(table_or_reader, "read_all") else table_or_reader


def same_clear_rows(original: pa.Table, exported: pa.Table, masked: set[str]) -> bool:
    """Whether the export holds the original's rows, compared on the columns it leaves in clear."""
    clear = _utc(pl.from_arrow(original.drop_columns(sorted(masked))))
    back = _utc(pl.from_arrow(exported.select(clear.columns)))
    return clear.sort(clear.columns, nulls_last=True).equals(back.sort(back.columns, nulls_last=True))


def published(deployment: Path, sql: str, params: list | None = None) -> list[tuple]:
    with publish.connect(deployment / "published") as con:
        return con.execute(sql, params or []).fetchall()


def test_bi_export_reads_back_with_its_types_and_personal_data_masked(deployment: Path) -> None:
    exports = deployment / "exports"
    manifest = read_manifest(exports)
    key = masking_key(deployment)
    personal = personal_columns(dbt_project().manifest_path)
    assert manifest["version"] == published(deployment, "SELECT version FROM serving.publication")[0][0]
    with publish.connect(deployment / "published") as con:
        tables = publish.served_tables(con)
        assert sorted(manifest["tables"]) == sorted(t for _, t in tables) and len(tables) >= 17
        for schema, table in tables:
            exported = read_current(exports, table)
            partition = manifest["tables"][table][
                "partitioned_by"
            ]  # facts by month (with a date), ML scores by as-of date
            assert partition in (
                {None, "month"} if table.startswith("fct_") else {"as_of" if schema == "ml" else None}
            ), table
            if partition:
                assert exported.column_names[-1] == partition
                exported = exported.drop_columns([partition])
            original = published_table(con, schema, table)
            assert exported.num_rows == original.num_rows == manifest["tables"][table]["rows"]
            masked = set(manifest["tables"][table]["masked_columns"])
            assert masked == personal.get(f"{schema}.{table}", set()) & set(original.column_names)
            for name in original.column_names:  # types intact; masked columns are hex strings
                expected = pa.string() if name in masked else original.schema.field(name).type
                assert _same_type(exported.schema.field(name).type, expected), (table, name)
            assert same_clear_rows(original, exported, masked), table
        lines = read_export(exports / "fct_order_lines")
        assert lines.schema.field("net_amount").type == pa.decimal128(18, 4)
        assert lines.schema.field("ordered_local_date").type == pa.date32()
        # Keyed hashes: HMAC-SHA256 with the deployment's key, the same in every table.
        emails = dict(
            con.execute("SELECT customer_version_key, email FROM marts.dim_customer WHERE email IS NOT NULL").fetchall()
        )
        clear_names = {
            r[0] for r in con.execute("SELECT full_name FROM marts.dim_customer WHERE full_name IS NOT NULL").fetchall()
        }
    customers = pl.from_arrow(read_export(exports / "dim_customer"))
    for version_key, email in list(emails.items())[:50]:
        masked_email = customers.filter(pl.col("customer_version_key") == version_key)["email"][0]
        assert masked_email == hmac.new(key.encode(), email.encode(), sha256).hexdigest()
    # No clear email or name anywhere in any exported file.
    for table in manifest["tables"]:
        frame = pl.from_arrow(read_export(exports / table))
        for name, dtype in frame.schema.items():
            if dtype == pl.String:
                values = set(frame[name].drop_nulls())
                assert not values & set(emails.values()) and not values & clear_names, (table, name)


def test_next_export_of_unchanged_months_links_their_files(deployment: Path) -> None:
    """A fact's month whose rows did not change since the last export is hard-linked, not written again."""
    exports = deployment / "exports"
    first, first_manifest = exports.resolve(), read_manifest(exports)
    personal = personal_columns(dbt_project().manifest_path)
    again = write_export(deployment / "published", deployment, ExportSpec(), personal, masking_key(deployment))
    assert again.folder != first and exports.resolve() == again.folder
    months, facts = 0, 0
    for table, entry in again.manifest["tables"].items():
        assert entry["rows"] == first_manifest["tables"][table]["rows"]
        if entry["partitioned_by"]:
            facts += 1
            assert entry["partitions"] == first_manifest["tables"][table]["partitions"]
            for file in (again.folder / table).rglob("*.parquet"):
                assert file.stat().st_ino == (first / file.relative_to(again.folder)).stat().st_ino, file
                months += 1
            assert read_export(again.folder / table).num_rows == entry["rows"]
    assert facts >= 4 and months >= facts
    # Months are fingerprinted before masking, so under another key no month is the same: all are
    # written again, with other hashes; and again when the deployment's key comes back.
    previous = again
    for key in ("another-masking-key", masking_key(deployment)):
        rekeyed = write_export(deployment / "published", deployment, ExportSpec(), personal, key)
        for table, entry in rekeyed.manifest["tables"].items():
            if entry["partitioned_by"] and entry["masked_columns"]:
                assert entry["masking"] != previous.manifest["tables"][table]["masking"]
                inodes = {f.stat().st_ino for f in (previous.folder / table).rglob("*.parquet")}
                assert not inodes & {f.stat().st_ino for f in (rekeyed.folder / table).rglob("*.parquet")}, table
                column = entry["masked_columns"][0]
                values = set(read_export(rekeyed.folder / table).column(column).drop_null().to_pylist()[:100])
                assert values and not values & set(read_export(previous.folder / table).column(column).to_pylist()), (
                    table
                )
        previous = rekeyed


def test_next_export_writes_only_the_dates_that_changed(deployment: Path, tmp_path: Path) -> None:
    """One date of order lines changes in a new published version, and a customer's ML score
    leaves (as an erasure takes it): the export writes that date's file and the score's as-of file
    again (an as-of date is fingerprinted by its run and rows), links every other one, and holds
    exactly the published rows."""
    root = tmp_path / "w"
    shutil.copytree(deployment, root, symlinks=True)
    before = read_manifest(root / "exports")
    months = sorted(before["tables"]["fct_order_lines"]["partitions"])
    days = sorted(before["tables"]["fct_order_lines"]["files"])
    day = days[len(days) // 2]  # a date inside the range, not at either end
    edit = f"UPDATE marts.fct_order_lines SET quantity = quantity + 1 WHERE ordered_local_date = DATE '{day}'"
    scores = next(  # an ML table of customers' scores, by as-of date
        t
        for t, e in before["tables"].items()
        if e["partitioned_by"] == "as_of" and "customer_key" in {c["name"] for c in e["columns"]}
    )
    as_of = sorted(before["tables"][scores]["files"])[-1]
    erase = (
        f"DELETE FROM ml.{scores} WHERE customer_key = (SELECT min(customer_key) FROM ml.{scores}) "
        f"AND as_of_date = DATE '{as_of}'"
    )
    publish.add_version(
        publish.current(root / "published"),
        root / "published",
        "one-date-changed",
        None,
        change=lambda con: (con.execute(edit).fetchall(), con.execute(erase).fetchall()),
    )
    first = (root / "exports").resolve()
    again = write_export(
        root / "published",
        root,
        ExportSpec(),
        personal_columns(dbt_project().manifest_path),
        masking_key(deployment),
    )
    written = 0
    for table, entry in again.manifest["tables"].items():
        for file in (again.folder / table).rglob("*.parquet"):
            linked = file.stat().st_ino == (first / file.relative_to(again.folder)).stat().st_ino
            rewritten = (table, file.name) in {
                ("fct_order_lines", f"{day}.parquet"),
                (scores, f"{as_of}.parquet"),
            }
            kept = entry["partitioned_by"] is not None or entry.get("row_changes") is not None
            assert linked == (kept and not rewritten), file
            written += 0 if linked else file.stat().st_size
    for corrections in ("customer_key_changes", "row_changes"):  # written each time
        written += sum(f.stat().st_size for f in (again.folder / corrections).rglob("*.parquet"))
    assert again.manifest["bytes_written"] == written and 0 < written < again.manifest["bytes"]  # what the day costs
    assert sorted(again.manifest["tables"]["fct_order_lines"]["partitions"]) == months
    exported = pl.from_arrow(read_export(again.folder / "fct_order_lines")).drop("month")
    with duckdb.connect(str(publish.current(root / "published")), read_only=True) as con:
        expected = con.sql("SELECT order_line_id, quantity FROM marts.fct_order_lines").pl()
    assert exported.select("order_line_id", "quantity").sort("order_line_id").equals(expected.sort("order_line_id"))
    assert again.manifest["tables"][scores]["rows"] == before["tables"][scores]["rows"] - 1
    assert read_export(again.folder / scores).num_rows == again.manifest["tables"][scores]["rows"]


def test_next_export_corrects_rekeyed_customers_without_writing_their_months(deployment: Path, tmp_path: Path) -> None:
    """Customers re-keyed across their history (a merge; a record no longer known) in a new published
    version: no month of a corrected fact is written again, `customer_key_changes` gives those
    records their current keys, and the facts read through it hold exactly the published keys."""
    root = tmp_path / "w"
    shutil.copytree(deployment, root, symlinks=True)
    first = (root / "exports").resolve()
    corrected = read_manifest(first)["customer_key_changes"]["corrects"]
    assert {"fct_order_lines", "fct_web_sessions", "fct_interactions", "fct_orders", "fct_payments"} <= set(corrected)
    records = [
        r[0]
        for r in published(
            root,
            "SELECT identity_record_key FROM marts.fct_order_lines WHERE customer_key IS NOT NULL GROUP BY 1 "
            "ORDER BY count(DISTINCT strftime(ordered_local_date, '%Y-%m')) DESC, 1 LIMIT 4",
        )
    ]
    survivor = published(root, "SELECT max(customer_key) FROM marts.dim_customer WHERE is_current")[0][0]
    now = {records[0]: survivor, records[1]: survivor, records[2]: None, records[3]: None}

    def rekey(con: duckdb.DuckDBPyConnection) -> None:  # as a build does: the map first, the facts join it
        for record, key in now.items():
            if key is None:
                con.execute("DELETE FROM marts.customer_identity_map WHERE record_key = ?", [record]).fetchall()
            else:
                con.execute(
                    "UPDATE marts.customer_identity_map SET customer_key = ? WHERE record_key = ?", [key, record]
                ).fetchall()
        for table in corrected:
            for record, key in now.items():
                con.execute(
                    f"UPDATE marts.{table} SET customer_key = ? WHERE identity_record_key = ?", [key, record]
                ).fetchall()

    publish.add_version(publish.current(root / "published"), root / "published", "rekeyed", None, change=rekey)
    key = masking_key(deployment)
    again = write_export(root / "published", root, ExportSpec(), personal_columns(dbt_project().manifest_path), key)
    for table in corrected:
        for file in (again.folder / table).rglob("*.parquet"):
            assert file.stat().st_ino == (first / file.relative_to(again.folder)).stat().st_ino, file
    # The map kept its base: the changes follow on from the first export's, not from every kept file.
    assert read_manifest(again.folder)["customer_key_changes"]["found_from"] == "previous export"
    rows = read_export(again.folder / "customer_key_changes").to_pylist()
    changes = {r["identity_record_key"]: r["customer_key"] for r in rows}
    masked = {hmac.new(key.encode(), r.encode(), sha256).hexdigest(): k for r, k in now.items()}
    assert {r: changes.get(r, "absent") for r in masked} == masked
    assert_reads_the_published_keys(root, again.folder, corrected, key)

    # The next day rewrites a date of order lines the re-keyed export kept: only that file is
    # written, and the re-keyed records stay corrected.
    day = sorted(read_manifest(again.folder)["tables"]["fct_order_lines"]["files"])[0]
    edit = f"UPDATE marts.fct_order_lines SET quantity = quantity + 1 WHERE ordered_local_date = DATE '{day}'"
    publish.add_version(
        publish.current(root / "published"), root / "published", "next", None, change=lambda con: con.execute(edit)
    )
    third = write_export(root / "published", root, ExportSpec(), personal_columns(dbt_project().manifest_path), key)
    rewritten = [f for f in (third.folder / "fct_order_lines").rglob("*.parquet") if f.stat().st_nlink == 1]
    assert [f.name for f in rewritten] == [f"{day}.parquet"]
    assert read_manifest(third.folder)["customer_key_changes"]["found_from"] == "previous export"
    rows = read_export(third.folder / "customer_key_changes").to_pylist()
    assert {r: {x["identity_record_key"]: x["customer_key"] for x in rows}.get(r, "absent") for r in masked} == masked
    assert_reads_the_published_keys(root, third.folder, corrected, key)


def assert_reads_the_published_keys(root: Path, folder: Path, corrected: list[str], key: str) -> None:
    """Each corrected fact read through the export's key changes holds exactly the published keys."""
    with duckdb.connect(str(publish.current(root / "published")), read_only=True) as con:
        for table in corrected:
            expected = con.sql(f"SELECT identity_record_key, customer_key FROM marts.{table}").pl()
            expected = expected.with_columns(
                pl.col("identity_record_key").map_elements(
                    lambda r: hmac.new(key.encode(), r.encode(), sha256).hexdigest(), return_dtype=pl.String
                )
            )
            got = pl.from_arrow(read_current(folder, table)).select(expected.columns)
            assert got.sort(got.columns, nulls_last=True).equals(expected.sort(expected.columns, nulls_last=True)), (
                table
            )


def test_next_export_writes_a_keyed_tables_changes_not_the_table(deployment: Path, tmp_path: Path) -> None:
    """A new published version edits customer versions, drops customers from the 360 and adds an
    identity record: each keyed table keeps its base file, its `row_changes` hold exactly those rows
    (a tombstone per dropped key), and read through them it equals the published table. Once the
    changes pass a fifth of a table, it is written whole again with empty changes."""
    root = tmp_path / "w"
    shutil.copytree(deployment, root, symlinks=True)
    key, personal = masking_key(deployment), personal_columns(dbt_project().manifest_path)

    def export(edit: str) -> tuple[Path, dict]:
        publish.add_version(
            publish.current(root / "published"),
            root / "published",
            "edited",
            None,
            change=lambda con: con.execute(edit),
        )
        done = write_export(root / "published", root, ExportSpec(), personal, key)
        return done.folder, done.manifest["tables"]

    base = write_export(root / "published", root, ExportSpec(), personal, key, reuse=False).folder  # --rewrite
    edits = """
        UPDATE marts.dim_customer SET city = 'Changed' WHERE customer_version_key IN
            (SELECT customer_version_key FROM marts.dim_customer ORDER BY 1 LIMIT 3);
        DELETE FROM marts.customer_360 WHERE customer_key IN
            (SELECT customer_key FROM marts.customer_360 ORDER BY 1 LIMIT 2);
        DELETE FROM marts.customer_identity_map WHERE record_key IN
            (SELECT record_key FROM marts.customer_identity_map ORDER BY 1 LIMIT 1);
        INSERT INTO marts.customer_identity_map
            SELECT 'test:new', 'test', 'new', customer_key, 'test' FROM marts.customer_identity_map LIMIT 1;"""
    folder, tables = export(edits)
    # (the identity map's key is masked: its tombstone carries the masked record_key)
    keyed = {"dim_customer": (3, 0), "customer_360": (2, 2), "customer_identity_map": (2, 1)}
    with duckdb.connect(str(publish.current(root / "published")), read_only=True) as con:
        for table, (changed, deleted) in keyed.items():
            assert (tables[table]["row_changes"]["rows"], tables[table]["row_changes"]["deleted"]) == (changed, deleted)
            assert (folder / table / "data.parquet").stat().st_ino == (base / table / "data.parquet").stat().st_ino
            original = published_table(con, "marts", table)
            exported = read_current(folder, table)
            assert exported.num_rows == original.num_rows == tables[table]["rows"]
            assert same_clear_rows(original, exported, set(tables[table]["masked_columns"])), table
    folder, tables = export("UPDATE marts.customer_360 SET city = 'Moved' WHERE hash(customer_key) % 3 = 0")
    assert tables["customer_360"]["row_changes"]["rows"] == 0 < tables["dim_customer"]["row_changes"]["rows"]
    assert (folder / "customer_360" / "data.parquet").stat().st_nlink == 1
    assert read_export(folder / "customer_360").num_rows == tables["customer_360"]["rows"]
    # The bases' row hashes stay beside the exports, one file per base a kept export names.
    manifests = [read_manifest(version) for version in (root / ".exports.versions").iterdir()]
    named = states_named_by(manifests)
    assert {p.name for p in (root / ".exports.row_state").iterdir()} == named
    assert len(named) == len(keyed) + 2  # fct_campaign_contacts', and the 360's new base beside its old


def states_named_by(manifests: list[dict]) -> set[str]:
    """The state files (each keyed base's row hashes) the exports' manifests name."""
    return {t["row_changes"]["state"] for m in manifests for t in m["tables"].values() if t.get("row_changes")}


def test_unmasked_export_needs_its_flag_and_is_audited(deployment: Path, env: dict[str, str]) -> None:
    personal = personal_columns(dbt_project().manifest_path)
    with pytest.raises(MaskingKeyMissing):
        write_export(deployment / "published", deployment, ExportSpec(region="Sichuan"), personal, key=None)
    done = crm("export", "--region", "Sichuan", "--unmasked", env=env)
    assert done.returncode == 0, done.stderr
    assert "unmasked" in done.stderr.lower()
    audit = [json.loads(line) for line in (deployment / "governance" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["event"] == "unmasked_export" and audit[-1]["spec"]["region"] == "Sichuan" and audit[-1]["by"]
    customers = pl.from_arrow(read_export(deployment / "exports_region" / "Sichuan" / "dim_customer"))
    assert customers["email"].drop_nulls().str.contains("@").all()
    assert read_manifest(deployment / "exports_region" / "Sichuan")["tables"]["dim_customer"]["masked_columns"] == []
    again = crm("export", "--region", "Sichuan", env=env)  # masked again: the default
    assert again.returncode == 0 and not read_export(deployment / "exports_region" / "Sichuan" / "dim_customer").column(
        "email"
    ).to_pylist()[0].count("@")


def test_region_export_holds_only_that_regions_customers(deployment: Path, env: dict[str, str]) -> None:
    regions = published(
        deployment,
        "SELECT region, count(*) FROM marts.dim_customer WHERE is_current AND region IS NOT NULL "
        "GROUP BY 1 ORDER BY 2 DESC, 1",
    )
    region = regions[0][0]
    assert len(regions) > 3
    done = crm("export", "--region", region, env=env)
    assert done.returncode == 0, done.stderr
    theirs = {
        r[0]
        for r in published(
            deployment, "SELECT customer_key FROM marts.dim_customer WHERE is_current AND region = ?", [region]
        )
    }
    everyone = {r[0] for r in published(deployment, "SELECT customer_key FROM marts.dim_customer")}
    folder = deployment / "exports_region" / region
    manifest = read_manifest(folder)
    keyed = 0
    for table in manifest["tables"]:
        frame = read_current(folder, table)
        if "customer_key" in frame.column_names:
            keys = set(frame.column("customer_key").to_pylist())
            assert keys <= theirs, f"{table}: {len(keys - theirs)} keys of other regions"
            keyed += 1
    assert keyed >= 10 and len(everyone - theirs) > 0
    assert set(read_export(folder / "dim_customer").column("customer_key").to_pylist()) == theirs
    orders = published(
        deployment,
        "SELECT count(*) FROM marts.fct_orders WHERE customer_key IN "
        "(SELECT customer_key FROM marts.dim_customer WHERE is_current AND region = ?)",
        [region],
    )[0][0]
    assert manifest["tables"]["fct_orders"]["rows"] == orders > 0
    assert (
        crm("export", "--region", "Atlantis", env=env).stderr.count(region) == 1
    )  # an unknown region lists the known ones
    # The same rule as SQL views for analysts.
    scoped = published(deployment, f"SET VARIABLE crm_region = '{region}'; SELECT count(*) FROM scoped.fct_orders")
    assert scoped[0][0] == orders


def _expected_audience(con: duckdb.DuckDBPyConnection, segment: str, as_of: dt.date) -> set[str]:
    """Independently: the segment's customers whose version in force at the end of `as_of` consents and has an email."""
    rfm = con.sql("SELECT customer_key, as_of_date FROM ml.rfm_segments WHERE segment = ?", params=[segment]).pl()
    rfm = rfm.filter(pl.col("as_of_date") == rfm.filter(pl.col("as_of_date") <= as_of)["as_of_date"].max())
    return _consenting(con, set(rfm["customer_key"]), as_of)


def _consenting(con: duckdb.DuckDBPyConnection, keys: set[str], as_of: dt.date) -> set[str]:
    """Those of `keys` whose version in force at the end of `as_of` consents and has an email."""
    versions = con.sql(
        "SELECT customer_key, valid_from, valid_to, has_marketing_consent, email FROM marts.dim_customer"
    ).pl()
    end = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time())
    in_force = versions.filter(
        (pl.col("valid_from") < end) & (pl.col("valid_to").is_null() | (pl.col("valid_to") >= end))
    )
    allowed = in_force.filter(pl.col("has_marketing_consent") & pl.col("email").is_not_null())
    return keys & set(allowed["customer_key"])


def test_audience_uses_consent_as_of_the_as_of_date(
    deployment: Path, env: dict[str, str], sample: GeneratorConfig, tmp_path: Path
) -> None:
    segment = published(deployment, "SELECT segment FROM ml.rfm_segments GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")[
        0
    ][0]
    done = crm("audience", "--segment", segment, "--channel", "email", env=env)
    assert done.returncode == 0, done.stderr
    folder = next(p for p in (deployment / "audiences").iterdir() if p.is_symlink())
    audience = pl.from_arrow(read_export(folder / "audience"))
    as_of = dt.date.fromisoformat(read_manifest(folder)["as_of_date"])
    with publish.connect(deployment / "published") as con:
        expected = _expected_audience(con, segment, as_of)
        in_segment = {
            r[0]
            for r in con.execute(
                "SELECT customer_key FROM ml.rfm_segments WHERE segment = ? AND as_of_date = ?", [segment, as_of]
            ).fetchall()
        }
    assert set(audience["customer_key"]) == expected and 0 < len(expected) < len(in_segment)  # consent excludes some
    assert audience["contact"].str.len_chars().eq(64).all()  # masked
    # As of an earlier date, the consent then in force decides, not today's.
    copy = tmp_path / "earlier.duckdb"
    shutil.copyfile(publish.current(deployment / "published"), copy)
    earlier = sample.start + dt.timedelta(days=20)
    with duckdb.connect(str(copy)) as con:
        con.execute("UPDATE serving.publication SET as_of_date = ?", [earlier])
        query = audience_query(con, ExportSpec(kind="audience", segment=segment, channel="email", masked=False), {})[
            "audience"
        ].query
        then = {r[0] for r in con.execute(f"SELECT customer_key FROM ({query})").fetchall()}
        assert then == _expected_audience(con, segment, earlier) and then
        changed = con.execute("""
            SELECT count(DISTINCT customer_key) FROM marts.dim_customer
            GROUP BY customer_key HAVING count(DISTINCT has_marketing_consent) > 1""").fetchall()
    assert changed, "the sample has customers whose consent changed"
    bad = crm("audience", "--segment", "Nobody", env=env)
    assert bad.returncode == 1 and segment in bad.stderr


def test_triggered_audience_holds_abandoners_with_consent_and_no_order_since(
    deployment: Path, env: dict[str, str]
) -> None:
    done = crm("audience", "--trigger", "cart_abandonment", "--within", "12", "--channel", "email", env=env)
    assert done.returncode == 0, done.stderr
    folder = deployment / "audiences" / "cart_abandonment_12h_email"
    audience = pl.from_arrow(read_export(folder / "audience"))
    as_of = dt.date.fromisoformat(read_manifest(folder)["as_of_date"])
    with publish.connect(deployment / "published") as con:
        sessions = con.sql(
            "SELECT customer_key, session_ended_at FROM marts.fct_web_sessions WHERE customer_key IS NOT NULL "
            "AND add_to_carts > 0 AND orders = 0 AND session_local_date >= ? - 7 AND session_local_date < ? "
            "AND identity_record_key IN (SELECT identity_record_key FROM marts.fct_interactions "
            "WHERE carries_identifier AND occurred_local_date <= ?)",
            params=[as_of, as_of, as_of],
        ).pl()
        orders = con.sql(
            "SELECT customer_key, ordered_at FROM marts.fct_orders WHERE NOT is_refund AND ordered_local_date <= ?",
            params=[as_of],
        ).pl()
        web_last = con.execute(
            "SELECT max(session_started_at) FROM marts.fct_web_sessions WHERE session_local_date <= ?", [as_of]
        ).fetchall()[0][0]
        expected_consent = _consenting(con, set(sessions["customer_key"]), as_of)
    now = max(web_last, orders["ordered_at"].max())
    waited = sessions.filter(pl.col("session_ended_at") + dt.timedelta(hours=12) <= now)
    last_order = orders.group_by("customer_key").agg(last_order=pl.col("ordered_at").max())
    quiet = waited.join(last_order, on="customer_key", how="left").filter(
        pl.col("last_order").is_null() | (pl.col("last_order") <= pl.col("session_ended_at"))
    )  # no order after this session
    expected = set(quiet["customer_key"]) & expected_consent
    assert set(audience["customer_key"]) == expected and expected
    assert set(audience["trigger"]) == {"cart_abandonment"} and audience["contact"].str.len_chars().eq(64).all()
    assert crm("audience", "--trigger", "cart_abandonment", "--segment", "Champions", env=env).returncode == 1


def test_forget_erases_one_person_everywhere_and_keeps_them_out(
    deployment: Path, env: dict[str, str], sample: GeneratorConfig, tmp_path: Path
) -> None:
    build = deployment / "crm.duckdb"
    truth = pl.read_csv(deployment / "truth" / "identity.csv", infer_schema_length=0)
    with duckdb.connect(str(build), read_only=True) as con:
        # A customer seen in several channels, with an email and a phone, history first.
        # Erasure reaches the records identity resolution linked to the person: take one whose every
        # true record it linked (a record it missed, such as a call from a number the registry does
        # not know, is nobody's to erase).
        candidates = con.execute("""
            SELECT c.customer_key, c.email, c.customer_ref FROM marts.customer_360 AS s
            INNER JOIN marts.dim_customer AS c ON c.customer_key = s.customer_key AND c.is_current
            WHERE s.channel_count >= 2 AND c.email IS NOT NULL AND c.phone_e164 IS NOT NULL AND c.customer_ref IS NOT NULL
            ORDER BY c.version_number DESC, s.channel_count DESC, s.calls + s.social_interactions DESC, c.customer_key
            LIMIT 50""").fetchall()
        mapped = con.execute(
            "SELECT customer_key, record_type, lower(regexp_replace(record_id, '^[^:]*:', '')) FROM marts.customer_identity_map "
            "WHERE record_type IN ('order', 'call') UNION ALL SELECT customer_key, record_type, lower(record_id) "
            "FROM marts.customer_identity_map WHERE record_type NOT IN ('order', 'call')"
        ).fetchall()
        linked: dict[str, set] = {}
        for customer, record_type, record_id in mapped:
            linked.setdefault(customer, set()).add((record_type, record_id))

        def true_records(customer_ref: str) -> set:
            person_id = truth.filter(
                (pl.col("record_type") == "profile") & (pl.col("source_record_id") == customer_ref)
            )
            rows = truth.filter(pl.col("person_id") == person_id["person_id"][0])
            return {(r["record_type"], r["source_record_id"].lower()) for r in rows.iter_rows(named=True)}

        reached = [c for c in candidates if true_records(c[2]) <= linked.get(c[0], set())]
        key, email, ref = max(reached, key=lambda c: len(true_records(c[2])))  # the most records to erase
        phone = con.execute(
            "SELECT phone_e164 FROM marts.dim_customer WHERE customer_key = ? AND is_current", [key]
        ).fetchall()[0][0]
        spaced = f"{phone[:3]} {phone[3:6]}-{phone[6:10]}-{phone[10:]}"
        assert find_customer_keys(con, ErasureRequest(phone=spaced)) == [key]  # any phone format finds them
        assert find_customer_keys(con, ErasureRequest(email=email.upper())) == [key]
    person = truth.filter((pl.col("record_type") == "profile") & (pl.col("source_record_id") == ref))["person_id"][0]
    records = truth.filter(pl.col("person_id") == person)
    before = tmp_path / "before.duckdb"
    shutil.copyfile(build, before)

    done = crm("forget", "--email", email, "--by", "dpo@example.com", env=env)
    assert done.returncode == 0, done.stderr

    with duckdb.connect(str(build), read_only=True) as con:
        con.execute(f"ATTACH '{before}' AS before (READ_ONLY)")
        tables = con.execute("""SELECT table_schema, table_name FROM information_schema.tables
                                WHERE table_catalog = 'crm' AND table_type = 'BASE TABLE' AND table_schema <> 'serving'""").fetchall()
        removed_keyed = 0
        for schema, table in tables:
            if f"{schema}.{table}" == ERASED_RECORDS:  # the one table erasure adds to (checked below)
                continue
            added = con.execute(
                f'SELECT count(*) FROM (SELECT * FROM crm."{schema}"."{table}" EXCEPT ALL '
                f'SELECT * FROM before."{schema}"."{table}")'
            ).fetchall()[0][0]
            assert added == 0, f"{schema}.{table} has rows it did not have"  # nobody else's rows change
            gone = con.sql(
                f'SELECT * FROM before."{schema}"."{table}" EXCEPT ALL SELECT * FROM crm."{schema}"."{table}"'
            ).pl()
            if "customer_key" in gone.columns:
                assert set(gone["customer_key"]) <= {key}, f"{schema}.{table} lost other customers' rows"
                left = con.execute(
                    f'SELECT count(*) FROM crm."{schema}"."{table}" WHERE customer_key = ?', [key]
                ).fetchall()[0][0]
                assert left == 0, f"{schema}.{table} still holds the person"
                removed_keyed += gone.height
        assert removed_keyed > 20
        assert (
            con.execute("""SELECT count(*) FROM intermediate.int_web_events_sessionized WHERE web_event_id NOT IN
                              (SELECT web_event_id FROM staging.stg_web__events)""").fetchall()[0][0]
            == 0
        )
        assert (
            con.execute(
                "SELECT count(*) FROM intermediate.int_identifiers_collected WHERE identifier_value = ?", [email]
            ).fetchall()[0][0]
            == 0
        )
        # Raw: every removed row is one of the person's true records, and none of theirs is left.
        theirs = {(r["record_type"], r["source_record_id"].lower()) for r in records.iter_rows(named=True)}
        # The records whose staging rows left, for the identifier collection to collect again.
        cut = {(t, i.lower()) for t, i in con.execute(f"SELECT * FROM crm.{ERASED_RECORDS}").fetchall()}
        assert cut & theirs, cut
        raw = {
            "pos_receipt_lines": ("order", "order_id"),
            "web_events": ("web_cookie", "cookie_id"),
            "call_center_calls": ("call", "call_id"),
            "customer_profiles": ("profile", "customer_ref"),
            "social_interactions": ("social_account", "platform || ':' || handle"),
        }
        for table, (record_type, record_id) in raw.items():

            def ids(catalog: str, table=table, record_id=record_id, record_type=record_type) -> list[tuple[str, str]]:
                return [
                    (record_type, str(r[0]).strip().lower())
                    for r in con.execute(
                        f"SELECT {record_id} FROM {catalog}.raw.{table} WHERE {record_id} IS NOT NULL"
                    ).fetchall()
                ]

            removed = set(ids("before")) - set(ids("crm"))
            assert removed <= theirs, f"raw.{table} lost records of other persons: {sorted(removed - theirs)[:3]}"
            assert not set(ids("crm")) & theirs, f"raw.{table} still holds the person's records"
        assert (
            con.execute("SELECT count(*) FROM raw.web_events WHERE lower(email) LIKE ?", [f"%{email}%"]).fetchall()[0][
                0
            ]
            == 0
        )
        # Campaign lists name the person by member id: those rows go too, and only those.
        listed = "SELECT count(*) FROM {}.raw.campaign_tests WHERE customer_ref = ?"
        assert con.execute(listed.format("crm"), [ref]).fetchall()[0][0] == 0
        gone = con.execute(
            "SELECT lower(customer_ref) FROM before.raw.campaign_tests EXCEPT ALL "
            "SELECT lower(customer_ref) FROM crm.raw.campaign_tests"
        ).fetchall()
        assert {("profile", r[0]) for r in gone} <= theirs

    # Published versions and exports: one new version, no trace of the person, audit without their data.
    assert [p.name for p in publish.versions(deployment / "published")] == [
        publish.current(deployment / "published").name
    ]
    assert (
        published(
            deployment, "SELECT count(*) FROM marts.dim_customer WHERE customer_key = ? OR email = ?", [key, email]
        )[0][0]
        == 0
    )
    masked_email = hmac.new(masking_key(deployment).encode(), email.encode(), sha256).hexdigest()
    for manifest in (deployment).glob("**/manifest.json"):
        for table in json.loads(manifest.read_text())["tables"]:
            frame = pl.from_arrow(read_export(manifest.parent / table))
            for column in ("customer_key", "email", "contact"):
                if column in frame.columns:
                    assert not frame[column].is_in([key, masked_email, email]).any(), (manifest, table, column)
    for folder in known_exports(deployment):
        assert len(list((folder.parent / f".{folder.name}.versions").iterdir())) == 1  # older exports deleted
        states = folder.parent / f".{folder.name}.row_state"  # and the row hashes of their bases
        named = states_named_by([read_manifest(folder)])
        assert ({p.name for p in states.iterdir()} if states.is_dir() else set()) == named
    audit_text = (deployment / "governance" / "audit.jsonl").read_text()
    entry = [json.loads(line) for line in audit_text.splitlines()][-1]
    assert entry["event"] == "erasure" and entry["requested_by"] == "dpo@example.com" and entry["customers"] == 1
    assert entry["identifier"]["keyed_hash"] == masked_email and sum(entry["rows_removed"].values()) > 20
    assert email not in audit_text and key not in audit_text
    with (deployment / "governance" / "suppression.csv").open() as f:
        assert len(list(csv.DictReader(f))) == entry["rows_suppressed"] > 0

    # Re-loading every landed file does not bring them back.
    summary = run_pipeline(Settings.load(deployment / "sources.yml", build), start=sample.start)
    assert sum(m.get("rows_suppressed", 0) for m in summary.materialized.values()) == entry["rows_suppressed"]
    with duckdb.connect(str(build), read_only=True) as con:
        assert (
            con.execute("SELECT count(*) FROM raw.customer_profiles WHERE customer_ref = ?", [ref]).fetchall()[0][0]
            == 0
        )
        assert con.execute("SELECT count(*) FROM marts.dim_customer WHERE email = ?", [email]).fetchall()[0][0] == 0
    assert published(deployment, "SELECT count(*) FROM marts.dim_customer WHERE email = ?", [email])[0][0] == 0


def _clear_identifier_hits(export: Path, identifiers: Path) -> dict[str, int]:
    """Every text column of every exported table, searched for the clear value of every identifier
    the identity graph knows (member id, card, phone, email, cookie, social handle), as a whole or
    as one or two adjacent parts of a composite key. Independent of serving/identifier_leaks.py."""
    hits = {}
    with duckdb.connect() as con:
        con.execute(f"ATTACH '{identifiers}' AS w (READ_ONLY)")
        con.execute(
            "CREATE TEMP TABLE ids AS SELECT DISTINCT identifier_value AS v FROM w.intermediate.int_customer_keys_assigned"
        )
        folders = [*export.iterdir(), *(export / "row_changes").glob("*")]  # the changes hold rows too
        for table in sorted(p for p in folders if p.is_dir() and p.name != "row_changes"):
            relation = f"read_parquet('{table}/**/*.parquet', hive_partitioning = false)"
            for column, type_, *_ in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall():
                if type_ != "VARCHAR":
                    continue
                n = con.execute(f"""
                    WITH parts AS (SELECT "{column}" AS value, string_split_regex("{column}", '[:|~ ]') AS t FROM {relation})
                    SELECT count(DISTINCT value) FROM parts,
                           unnest(list_concat([value], t, list_transform(range(1, len(t)), lambda i: t[i] || ':' || t[i + 1]))) AS u(p)
                    WHERE p IN (SELECT v FROM ids)""").fetchall()[0][0]
                if n:
                    hits[f"{table.name}.{column}"] = n
    return hits


def test_no_masked_identifier_is_in_clear_anywhere_in_an_export(deployment: Path, env: dict[str, str]) -> None:
    current = publish.current(deployment / "published")
    assert _clear_identifier_hits(deployment / "exports", current) == {}
    assert crm("export", "--region", "Sichuan", env=env).returncode == 0
    assert _clear_identifier_hits(deployment / "exports_region" / "Sichuan", current) == {}


def test_export_refuses_a_column_that_carries_an_identifier_in_clear(deployment: Path) -> None:
    from serving.identifier_leaks import IdentifierLeak, identifier_columns

    personal = personal_columns(dbt_project().manifest_path)
    personal["marts.fct_web_sessions"] = personal["marts.fct_web_sessions"] - {"web_session_id"}  # as if untagged
    with pytest.raises(IdentifierLeak, match=r"fct_web_sessions\.web_session_id"):
        write_export(
            deployment / "published",
            deployment / "leaky",
            ExportSpec(),
            personal,
            "k",
            identifiers=identifier_columns(dbt_project().manifest_path),
        )


def test_identifier_check_samples_a_large_table_the_same_way_every_time() -> None:
    from serving.identifier_leaks import SYSTEM_SAMPLE_ROWS, clear_identifiers
    from serving.masking import define_mask, masked_select

    con = duckdb.connect()
    define_mask(con, "k")
    con.execute("SET threads = 2")
    rows = 3 * SYSTEM_SAMPLE_ROWS  # sampled by whole vectors, not read whole
    con.execute(
        f"""CREATE SCHEMA marts;
        CREATE TABLE marts.visits AS SELECT 'cookie' || lpad(i::VARCHAR, 8, '0') AS cookie_id,
            CASE WHEN i % 10 = 0 THEN 'cookie' || lpad(i::VARCHAR, 8, '0') || ':e1' END AS visit_id,
            'page-' || (i % 7) AS page
        FROM range({rows}) AS t(i)"""
    )
    selects = {"visits": masked_select(con, "marts.visits", {"cookie_id"}, True)}
    identifiers = {"marts.visits": {"cookie_id"}}
    first = clear_identifiers(con, selects, identifiers)
    # One row in ten carries a cookie: about 200 of the 2,000 rows drawn, the same ones each time.
    assert set(first) == {"visits.visit_id"} and 100 < first["visits.visit_id"] < 300
    assert clear_identifiers(con, selects, identifiers) == first
    assert con.execute("SELECT current_setting('threads')").fetchall()[0][0] == 2
