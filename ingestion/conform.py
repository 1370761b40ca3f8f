"""SQL that turns a file's columns into contract fields: typed values plus, per record, the list of
contract violations (missing required field, bad type, unparsable date, malformed JSON line)."""

from __future__ import annotations

from ingestion.contracts import Field
from ingestion.read import FilesRead
from ingestion.sources import Source

_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")
_ZONED = r"(Z|[+-]\d{2}(:?\d{2})?)$"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _json_path(column: str) -> str:
    return "$." + ".".join(_quote_ident(part) for part in column.split("."))


def _source_value(read: FilesRead, column: str, json_columns: list[str]) -> tuple[str, str]:
    """(SQL expression, DuckDB type) of a mapped column; JSON keys may be dotted paths, read from
    `_values`, the list every line's mapped keys were extracted into with one parse."""
    if read.is_json_lines:
        return f"_values[{json_columns.index(column) + 1}]", "VARCHAR"
    return _quote_ident(column), read.columns[column]


def _text(expr: str, type_: str) -> str:
    """A source value as trimmed text (NULL when empty); whole floats lose their '.0'."""
    if type_ == "VARCHAR":
        return f"nullif(trim({expr}), '')"
    if type_ in ("DOUBLE", "FLOAT") or type_.startswith("DECIMAL"):
        return f"CASE WHEN {expr} = round({expr}) THEN CAST(CAST({expr} AS HUGEINT) AS VARCHAR) ELSE CAST({expr} AS VARCHAR) END"
    return f"CAST({expr} AS VARCHAR)"


def _parse(f: Field, expr: str, type_: str, source: Source) -> str:
    """Typed value of field `f`; NULL when the source value cannot be read as that type."""
    tz = _quote_str(source.timezone)
    text = _text(expr, type_)
    if f.type == "string":
        return text
    if f.type == "integer":
        if type_ in _NUMERIC:
            return f"CAST({expr} AS BIGINT)"
        if type_ in ("DOUBLE", "FLOAT") or type_.startswith("DECIMAL"):
            return f"CASE WHEN {expr} = round({expr}) THEN TRY_CAST({expr} AS BIGINT) END"
        # try_cast would round '2.5' to 3: accept whole numbers only.
        return f"CASE WHEN regexp_full_match({text}, '[+-]?\\d+(\\.0*)?') THEN TRY_CAST(TRY_CAST({text} AS DECIMAL(38,4)) AS BIGINT) END"
    if f.type == "decimal":
        return f"TRY_CAST({expr if type_ != 'VARCHAR' else text} AS DECIMAL(18,4))"
    if f.type == "boolean":
        if type_ == "BOOLEAN":
            return expr
        return (
            f"CASE WHEN lower({text}) IN ('true','t','yes','y','1') THEN true "
            f"WHEN lower({text}) IN ('false','f','no','n','0') THEN false END"
        )
    if f.type == "date":
        if type_ == "DATE":
            return expr
        if type_.startswith("TIMESTAMP"):
            return f"CAST({expr} AS DATE)"
        fmt = source.options.get("date_format")
        if fmt:
            return f"CAST(TRY_STRPTIME({text}, {_quote_str(str(fmt))}) AS DATE)"
        return f"TRY_CAST({text} AS DATE)"
    # timestamp -> TIMESTAMPTZ; values without a zone are in the source's timezone.
    if type_ in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        return expr
    if type_.startswith("TIMESTAMP") or type_ == "DATE":
        return f"timezone({tz}, CAST({expr} AS TIMESTAMP))"
    fmt = source.options.get("timestamp_format")
    if fmt:
        return f"timezone({tz}, TRY_STRPTIME({text}, {_quote_str(str(fmt))}))"
    return (
        f"CASE WHEN regexp_matches({text}, '{_ZONED}') THEN TRY_CAST({text} AS TIMESTAMPTZ) "
        f"ELSE timezone({tz}, TRY_CAST({text} AS TIMESTAMP)) END"
    )


def conform_sql(source: Source, read: FilesRead) -> str:
    """SELECT over `read.table` giving every contract field, `_row_number` and `_errors`.

    `_errors` is a list of {field, reason} structs, empty for a good record.
    """
    contract = source.contract
    json_columns = list(dict.fromkeys(source.columns.values()))
    selects, checks = [], []
    for f in contract.fields:
        column = source.columns.get(f.name)
        if column is None:
            if f.name == "currency" and source.options.get("currency"):
                value = _quote_str(str(source.options["currency"]))
            else:
                value = f"CAST(NULL AS {f.duckdb_type})"
            selects.append(f"{value} AS {f.name}")
            continue
        expr, type_ = _source_value(read, column, json_columns)
        parsed = _parse(f, expr, type_, source)
        selects.append(f"{parsed} AS {f.name}")
        text = _text(expr, type_)
        if f.required:
            checks.append(
                f"CASE WHEN {text} IS NULL THEN {{'field': '{f.name}', 'reason': 'missing required field'}} END"
            )
        if f.type != "string":
            reason = f"not a valid {f.type}: ' || {text} || '"
            checks.append(
                f"CASE WHEN {text} IS NOT NULL AND ({parsed}) IS NULL "
                f"THEN {{'field': '{f.name}', 'reason': '{reason}'}} END"
            )
    if source.format == "jsonl":
        # A broken line yields no fields: report only the JSON error for it.
        errors = (
            "CASE WHEN _json IS NULL THEN [{'field': NULL, 'reason': 'malformed JSON line'}] "
            f"ELSE list_filter([{', '.join(checks) or 'NULL'}], lambda e: e IS NOT NULL) END"
        )
        # json_extract_string with a list of paths parses each line once, not once per field.
        paths = ", ".join(_quote_str(_json_path(c)) for c in json_columns) or "'$.none'"
        relation = (
            f"(SELECT *, json_extract_string(_json, [{paths}]) AS _values FROM "
            f"(SELECT *, CASE WHEN json_valid(_line) THEN _line END AS _json FROM {read.table}))"
        )
    else:
        errors = f"list_filter([{', '.join(checks) or 'NULL'}], lambda e: e IS NOT NULL)"
        relation = read.table
    return f"SELECT {', '.join(selects)}, _file, _row_number, {errors} AS _errors FROM {relation}"


def raw_record_sql(read: FilesRead, alias: str) -> str:
    """The record as text for quarantine: the JSON line itself, or the row's columns as JSON."""
    if read.is_json_lines:
        return f"{alias}._line"
    cols = list(read.columns)
    return "to_json(struct_pack(" + ", ".join(f"{_quote_ident(c)} := {alias}.{_quote_ident(c)}" for c in cols) + "))"
