"""Right to erasure: remove one person from every layer, leave everybody else's rows as they were.

The person is found through the identity graph (an email, a phone or a customer key leads to their
customer key, and that to every identifier and source record they have). Removed:
- raw rows of their records or carrying their identifiers (every delivery of those business keys),
  and quarantined rows whose values carry their identifiers;
- every row with their customer key in intermediate, marts and ml tables (SCD2 history included),
  their web events in intermediate tables keyed by event (the sessionized events), and the
  identity graph's edges of their records and identifiers, and the staging tables' copies of the
  raw rows removed.
The same removal makes a new published version from the current one; older versions and exports,
which still hold the person, are deleted and the exports written again; insight reports that name
the person (the at-risk list) are deleted, for the next run to write again. The hashes of the removed
raw rows go to a suppression list the loader applies, so re-loading landed files does not bring
them back. The audit log records who asked, when, keyed hashes of the identifiers and the counts.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from ingestion.sources import Source

# Which rows of each staging table are the person's: the table's record id for the identity graph's
# record type, and the table's columns holding each identifier type (int_identifiers_collected).
PERSON_ROWS: dict[str, tuple[str, str, dict[str, str]]] = {
    "stg_customers__profiles": (
        "profile",
        "customer_ref",
        {"customer_ref": "customer_ref", "email": "email", "phone": "phone_e164", "loyalty_card": "loyalty_card"},
    ),
    "stg_store__order_lines": (
        "order",
        "concat(source_name, ':', order_id)",
        {"customer_ref": "customer_ref", "loyalty_card": "loyalty_card", "phone": "phone_e164"},
    ),
    "stg_web__events": (
        "web_cookie",
        "cookie_id",
        {"cookie": "cookie_id", "customer_ref": "customer_ref", "email": "email"},
    ),
    "stg_call_center__calls": ("call", "call_key", {"phone": "phone_e164", "customer_ref": "customer_ref"}),
    "stg_social__interactions": (
        "social_account",
        "concat(platform, ':', handle)",
        {"social_handle": "concat(platform, ':', handle)", "phone": "linked_phone_e164", "email": "linked_email"},
    ),
    # Campaign contacts are no records of the graph (they only look customers up): found by identifier.
    "stg_campaigns__contacts": (
        "campaign_contact",
        "campaign_contact_id",
        {"customer_ref": "customer_ref", "loyalty_card": "loyalty_card", "email": "email", "phone": "phone_e164"},
    ),
}
SUPPRESSION = "suppression.csv"
AUDIT = "audit.jsonl"


class PersonNotFound(LookupError):
    """No customer carries the identifier: nothing was changed."""


@dataclass(frozen=True)
class ErasureRequest:
    email: str | None = None
    phone: str | None = None
    customer_key: str | None = None
    requested_by: str = "unknown"

    def identifier(self) -> tuple[str, str]:
        given = [
            (k, v) for k, v in (("email", self.email), ("phone", self.phone), ("customer_key", self.customer_key)) if v
        ]
        if len(given) != 1:
            raise ValueError("give exactly one of --email, --phone, --customer-key")
        return given[0]


@dataclass
class Footprint:
    """What one erasure removed from one database, table by table."""

    removed: dict[str, int] = field(default_factory=dict)
    row_hashes: set[str] = field(default_factory=set)  # raw rows and quarantined records removed


def find_customer_keys(con: duckdb.DuckDBPyConnection, request: ErasureRequest) -> list[str]:
    kind, value = request.identifier()
    if kind == "customer_key":
        query, params = "SELECT DISTINCT customer_key FROM marts.dim_customer WHERE customer_key = ?", [value.strip()]
    elif kind == "email":
        query = (
            "SELECT DISTINCT customer_key FROM intermediate.int_customer_keys_assigned "
            "WHERE identifier_type = 'email' AND identifier_value = ?"
        )
        params = [value.strip().lower()]
    else:  # a phone in any format: the same digits as a normalized E.164 number, with or without its country code
        digits = re.sub(r"\D", "", value).lstrip("0")
        if len(digits) < 7:
            raise ValueError(f"{value!r} has too few digits to be a phone number")
        query = (
            "SELECT DISTINCT customer_key FROM intermediate.int_customer_keys_assigned WHERE identifier_type = 'phone' "
            "AND (substr(identifier_value, 2) = ? OR (length(?) >= 9 AND ends_with(identifier_value, ?)))"
        )
        params = [digits, digits, digits]
    keys = [r[0] for r in con.execute(query, params).fetchall()]
    if not keys:
        raise PersonNotFound(f"no customer has {kind} {value!r}: nothing was erased")
    return keys


def erase(
    con: duckdb.DuckDBPyConnection,
    keys: list[str],
    sources: list[Source],
    before_commit: Callable[[Footprint], None] | None = None,
) -> Footprint:
    """Delete the customers `keys` from every layer of the database behind `con`, in one transaction.

    `before_commit` sees what is about to go (the suppression list is written there, so that rows
    never leave raw without their hashes on the list)."""
    out = Footprint()
    con.execute("BEGIN TRANSACTION")
    try:
        _collect_person(con, keys)
        for source in sources:
            _erase_raw(con, source, out)
        _erase_quarantine(con, out)
        _erase_keyed_tables(con, out)
        if before_commit:
            before_commit(out)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.execute(
            "DROP TABLE IF EXISTS _erase_keys; DROP TABLE IF EXISTS _erase_ids; DROP TABLE IF EXISTS _erase_records; "
            "DROP TABLE IF EXISTS _erase_rows; DROP TABLE IF EXISTS _erase_web_events; DROP TABLE IF EXISTS _erase_raw_rows"
        )
    return out


def _collect_person(con: duckdb.DuckDBPyConnection, keys: list[str]) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE _erase_keys AS SELECT unnest(?::VARCHAR[]) AS customer_key", [keys])
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _erase_ids AS
        SELECT DISTINCT identifier_type, identifier_value FROM intermediate.int_customer_keys_assigned
        WHERE customer_key IN (SELECT customer_key FROM _erase_keys)""")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _erase_records AS
        SELECT DISTINCT record_type, record_id FROM marts.customer_identity_map
        WHERE customer_key IN (SELECT customer_key FROM _erase_keys)""")
    rows = []
    for view, (record_type, record_id, identifiers) in PERSON_ROWS.items():
        carries = " OR ".join(
            f"{column} IN (SELECT identifier_value FROM _erase_ids WHERE identifier_type = '{kind}')"
            for kind, column in identifiers.items()
        )
        rows.append(f"""
            SELECT source_name AS source, source_file AS file, source_row_number AS row_number FROM staging.{view}
            WHERE {record_id} IN (SELECT record_id FROM _erase_records WHERE record_type = '{record_type}') OR {carries}""")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _erase_rows AS {' UNION '.join(rows)}")
    con.execute("CREATE OR REPLACE TEMP TABLE _erase_raw_rows (source VARCHAR, file VARCHAR, row_number BIGINT)")
    # Read now: once staging is erased, it no longer shows which events were theirs.
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _erase_web_events AS
        SELECT s.web_event_id FROM staging.stg_web__events AS s INNER JOIN _erase_rows AS e
            ON s.source_name = e.source AND s.source_file = e.file AND s.source_row_number = e.row_number""")


def _erase_raw(con: duckdb.DuckDBPyConnection, source: Source, out: Footprint) -> None:
    """The person's rows and every other delivery of the same business keys (older versions)."""
    key = source.contract.key
    match = " AND ".join(f"t.{k} IS NOT DISTINCT FROM p.{k}" for k in key)
    doomed = f"""
        SELECT t._row_hash, t._file, t._row_number FROM {source.table} AS t
        WHERE t._source = '{source.name}' AND EXISTS (
            SELECT 1 FROM {source.table} AS p INNER JOIN _erase_rows AS e
                ON p._source = e.source AND p._file = e.file AND p._row_number = e.row_number
            WHERE {match})"""
    found = con.execute(doomed).fetchall()
    if not found:
        return
    out.row_hashes.update(r[0] for r in found)
    # Kept for the staging tables' copies of these rows (_erase_keyed_tables), and deleted by it.
    con.execute(f"INSERT INTO _erase_raw_rows SELECT '{source.name}', _file, _row_number FROM ({doomed})")
    con.execute(
        f"DELETE FROM {source.table} WHERE (_file, _row_number) IN "
        f"(SELECT (file, row_number) FROM _erase_raw_rows WHERE source = '{source.name}')"
    )
    out.removed[source.table] = out.removed.get(source.table, 0) + len(found)


def _erase_quarantine(con: duckdb.DuckDBPyConnection, out: Footprint) -> None:
    """Quarantined records are not parsed; a record is the person's when one of its values equals one
    of their identifiers (phones compared on digits: same number, with or without country code)."""
    doomed = """
        WITH quarantined AS (
            SELECT file, row_number, source, raw_record,
                   list_transform(regexp_extract_all(raw_record, '"((?:[^"\\\\]|\\\\.)*)"', 1), lambda v: lower(trim(v))) AS vals
            FROM raw.quarantine
        ),
        plain AS (
            SELECT lower(CASE WHEN identifier_type = 'social_handle' THEN split_part(identifier_value, ':', 2)
                              ELSE identifier_value END) AS v
            FROM _erase_ids WHERE identifier_type <> 'phone'
        ),
        phones AS (SELECT substr(identifier_value, 2) AS digits FROM _erase_ids WHERE identifier_type = 'phone')
        SELECT md5(raw_record), source, file, row_number FROM quarantined AS q
        WHERE len(list_intersect(q.vals, (SELECT list(v) FROM plain))) > 0
           OR EXISTS (
                SELECT 1 FROM (SELECT ltrim(regexp_replace(unnest(q.vals), '[^0-9]', '', 'g'), '0') AS d) AS x, phones AS p
                WHERE length(x.d) >= 9 AND ends_with(p.digits, x.d))"""
    found = con.execute(doomed).fetchall()
    if not found:
        return
    out.row_hashes.update(r[0] for r in found)
    con.execute(
        f"DELETE FROM raw.quarantine WHERE (source, file, row_number) IN (SELECT (source, file, row_number) FROM ({doomed}))"
    )
    out.removed["raw.quarantine"] = len(found)


# The records _note_records_cut lists; int_identifiers_collected recomputes and empties it.
ERASED_RECORDS = "intermediate.int_identifiers_collected__erased"
# A staging table's copies of the raw rows erased.
ERASED_STAGING_ROWS = (
    "(source_name, source_file, source_row_number) IN (SELECT (source, file, row_number) FROM _erase_raw_rows)"
)


def _erase_keyed_tables(con: duckdb.DuckDBPyConnection, out: Footprint) -> None:
    """Every base table outside raw with a customer_key column; the fuzzy-match pairs by customer_ref;
    the sessionized web events by event; the identity graph's edges by record and identifier; the
    records marked stale for the identity map by record; the staging tables by the raw rows erased."""
    tables = con.execute("""
        SELECT t.table_schema, t.table_name, list(c.column_name) AS columns
        FROM information_schema.tables AS t
        INNER JOIN information_schema.columns AS c ON c.table_schema = t.table_schema AND c.table_name = t.table_name
        WHERE t.table_type = 'BASE TABLE' AND t.table_schema NOT IN ('raw', 'serving')
        GROUP BY ALL ORDER BY 1, 2""").fetchall()
    _note_records_cut(con, {(schema, table) for schema, table, _ in tables})
    refs = "(SELECT identifier_value FROM _erase_ids WHERE identifier_type = 'customer_ref')"
    for schema, table, columns in tables:
        if "customer_key" in columns:
            where = "customer_key IN (SELECT customer_key FROM _erase_keys)"
        elif {"customer_ref_l", "customer_ref_r"} <= set(columns):
            where = f"customer_ref_l IN {refs} OR customer_ref_r IN {refs}"
        elif "web_event_id" in columns:
            where = "web_event_id IN (SELECT web_event_id FROM _erase_web_events)"
        elif {"record_type", "record_id", "identifier_type", "identifier_value"} <= set(columns):  # the graph's edges
            where = (
                "(record_type, record_id) IN (SELECT (record_type, record_id) FROM _erase_records) OR "
                "(identifier_type, identifier_value) IN (SELECT (identifier_type, identifier_value) FROM _erase_ids)"
            )
        elif {"record_type", "record_id"} <= set(columns):  # records whose identity-map row is stale
            where = "(record_type, record_id) IN (SELECT (record_type, record_id) FROM _erase_records)"
        elif {"source_name", "source_file", "source_row_number"} <= set(columns):  # staging: raw rows, cleaned
            where = ERASED_STAGING_ROWS
        else:
            continue
        removed = con.execute(f'DELETE FROM "{schema}"."{table}" WHERE {where}').fetchall()[0][0]
        if removed:
            out.removed[f"{schema}.{table}"] = removed


def _note_records_cut(con: duckdb.DuckDBPyConnection, tables: set[tuple[str, str]]) -> None:
    """The identity graph's records whose staging rows this erasure removes, for the next build of the
    incremental identifier collection to collect again from the rows they keep (a removed row may
    have carried an identifier of another record than the person's)."""
    if ("intermediate", "int_identifiers_collected") not in tables:
        return
    cut = [
        f"SELECT '{record_type}' AS record_type, {record_id} AS record_id FROM staging.{table} WHERE {ERASED_STAGING_ROWS}"
        for table, (record_type, record_id, _) in PERSON_ROWS.items()
        if ("staging", table) in tables
    ]
    con.execute(f"CREATE TABLE IF NOT EXISTS {ERASED_RECORDS} (record_type VARCHAR, record_id VARCHAR)").fetchall()
    if cut:
        con.execute(f"INSERT INTO {ERASED_RECORDS} {' UNION '.join(cut)}").fetchall()


def append_suppression(governance: Path, erasure_id: str, row_hashes: set[str]) -> None:
    """Add hashes of removed rows to the suppression list (hashes only: the rows are gone)."""
    path = governance / SUPPRESSION
    governance.mkdir(parents=True, exist_ok=True)
    listed = set()
    if path.exists():
        with path.open(newline="") as f:
            listed = {row["row_hash"] for row in csv.DictReader(f)}
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if not listed and f.tell() == 0:
            writer.writerow(["erasure_id", "row_hash"])
        writer.writerows((erasure_id, h) for h in sorted(row_hashes - listed))


def suppression_list(governance: Path) -> Path | None:
    path = governance / SUPPRESSION
    return path if path.exists() else None


def write_audit(governance: Path, entry: dict) -> None:
    governance.mkdir(parents=True, exist_ok=True)
    with (governance / AUDIT).open("a") as f:
        f.write(json.dumps(entry, default=str) + "\n")


def new_erasure_id() -> str:
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


@dataclass
class Erasure:
    erasure_id: str
    customer_keys: list[str]
    removed: dict[str, int]  # table -> rows, in the build database
    suppressed: int
    published_version: int | None
    versions_deleted: list[str]
    exports_rewritten: list[str]
    reports_deleted: list[str]


def delete_reports_naming(reports: Path, customer_keys: list[str]) -> list[str]:
    """Delete every insight report (HTML and its PDF) whose page names one of `customer_keys` (the
    at-risk list names customers, in clear with --unmasked); the next run or `crm report` writes
    the report of the erased version again."""
    deleted = []
    for page in sorted(reports.rglob("*.html")) if reports.is_dir() else []:
        text = page.read_text(encoding="utf-8", errors="replace")
        if any(key in text for key in customer_keys):
            page.unlink()
            page.with_suffix(".pdf").unlink(missing_ok=True)
            deleted.append(str(page))
    return deleted


def _erase_published(
    published_dir: Path, keys: list[str], sources: list[Source], governance: Path, erasure_id: str
) -> tuple[int, list[str]]:
    """A new published version: the current one with the person erased; every older one deleted.
    Returns (the new version, the versions deleted)."""
    from serving import publish

    current = publish.current(published_dir)
    with duckdb.connect(str(current), read_only=True) as con:
        run_id, as_of = con.execute("SELECT run_id, as_of_date FROM serving.publication").fetchall()[0]
    pub = publish.add_version(
        current,
        published_dir,
        run_id,
        as_of,
        keep=1,
        change=lambda c: erase(
            c, keys, sources, before_commit=lambda fp: append_suppression(governance, erasure_id, fp.row_hashes)
        ),
    )
    return pub.version, pub.pruned


def forget(
    request: ErasureRequest,
    build: Path,
    published_dir: Path,
    governance: Path,
    sources: list[Source],
    key: str,
    personal: dict[str, set[str]],
    duckdb_config: dict | None = None,
) -> Erasure:
    """Erase one person from the build database, the published versions and every export; audit it.

    Fails before changing anything when a run holds the build database (DuckDB's lock).
    `duckdb_config`: the deployment's DuckDB limits, for the build database and the exports.
    """
    from serving import export, publish
    from serving.masking import keyed_hash

    erasure_id = new_erasure_id()
    try:
        con = duckdb.connect(str(build), config=duckdb_config or {})
    except duckdb.IOException as e:
        raise RuntimeError(
            f"the warehouse {build} is being written (a run is in progress); try again when it ends: {e}"
        ) from None
    with con:
        keys = find_customer_keys(con, request)
        footprint = erase(
            con, keys, sources, before_commit=lambda fp: append_suppression(governance, erasure_id, fp.row_hashes)
        )
    version: int | None = None
    deleted: list[str] = []
    rewritten: list[str] = []
    if (published_dir / publish.CURRENT).is_symlink():
        version, deleted = _erase_published(published_dir, keys, sources, governance, erasure_id)
        for path in export.known_exports(published_dir.parent):
            spec = export.ExportSpec(**export.read_manifest(path)["spec"])
            # Every file anew: a kept month could hold the person's old customer key (serving/key_changes.py).
            export.write_export(published_dir, published_dir.parent, spec, personal, key, duckdb_config, reuse=False)
            export.drop_all_but_current(path)
            rewritten.append(str(path))
    reports = delete_reports_naming(published_dir.parent / "reports", keys)
    result = Erasure(
        erasure_id, keys, footprint.removed, len(footprint.row_hashes), version, deleted, rewritten, reports
    )
    kind, value = request.identifier()
    write_audit(
        governance,
        {
            "event": "erasure",
            "erasure_id": erasure_id,
            "at": dt.datetime.now(dt.UTC).isoformat(),
            "requested_by": request.requested_by,
            "identifier": {
                "type": kind,
                "keyed_hash": keyed_hash(key, value.strip().lower() if kind == "email" else value.strip()),
            },
            "customers": len(keys),
            "rows_removed": footprint.removed,
            "rows_suppressed": len(footprint.row_hashes),
            "published_version": version,
            "versions_deleted": deleted,
            "exports_rewritten": rewritten,
            "reports_deleted": reports,
        },
    )
    return result
