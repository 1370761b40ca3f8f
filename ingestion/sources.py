"""The sources file: where a deployment's extracts are and how their columns map onto the contracts.

Loaded and checked once, up front, so a typo fails with a message naming the source and key
instead of surfacing as a broken partition hours later.
"""

from __future__ import annotations

import codecs
import datetime as dt
import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from ingestion.contracts import CONTRACTS, Contract, contract_for

FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".xlsx": "xlsx",
}
OPTION_KEYS = {
    "timestamp_format",  # strptime format of string timestamps without zone, e.g. "%m/%d/%Y %H:%M"
    "date_format",  # strptime format of string dates
    "timezone",  # zone of timestamps that carry none (IANA name); default: the file's partitions.timezone
    "currency",  # currency of money fields when the source has no currency column
    "delimiter",  # CSV delimiter; default ","
    "max_quarantine_rate",  # share of quarantined rows above which the quality check fails
    "encoding",  # text encoding of CSV and JSON-lines files (gbk, gb18030, big5, utf-16, latin-1, ...); default utf-8
    "sheet",  # Excel: the sheet, by name or 0-based index; default the first
    "header_row",  # Excel: the 1-based row holding the header; default 1
}
# Options only one channel's sources take: name -> (type, default). The campaigns' describe the
# experiment the file comes from (docs/decision_support.md).
CHANNEL_OPTIONS: dict[str, dict[str, tuple[type, object]]] = {
    "campaigns": {
        "control_arms": (list, []),  # arms that were held out (not contacted), e.g. [holdout]
        "randomized": (bool, False),  # were arms assigned at random? Only then is an effect reported
        "response_window_days": (int, 14),  # orders this many days after assignment count as responses
    },
}
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# The `identity:` section: the identity guard and the giant-customer alarm (docs/identity.md). Each
# key is the dbt var identity_<key>, whose default dbt_project.yml holds.
IDENTITY_SETTINGS: dict[str, type | tuple[type, ...]] = {
    "guard_max_people": int,
    "guard_max_cards": int,
    "guard_outlier_min_records": int,
    "guard_outlier_factor": (int, float),
    "guard_deny": list,
    "guard_allow": list,
    "alarm_max_records": int,
    "alarm_max_names": int,
    "fuzzy_match_threshold": (int, float),  # not a dbt var: the identity assets' (identity/duckdb.py)
}
FUZZY_MATCH_THRESHOLD = 0.99  # a Splink pair at this match probability or above links two profiles


class SourcesError(ValueError):
    """The sources file is wrong; the message names the file, source and key."""


@dataclass(frozen=True)
class Source:
    name: str
    channel: str
    path: str  # absolute glob
    format: str
    columns: dict[str, str]  # contract field -> column in the file
    timezone: str
    options: dict[str, Any] = field(default_factory=dict)  # values as the YAML gives them

    @property
    def contract(self) -> Contract:
        return contract_for(self.channel)

    @property
    def table(self) -> str:
        return f"raw.{self.name}"

    @property
    def max_quarantine_rate(self) -> float:
        return float(self.options.get("max_quarantine_rate", 0.05))

    def channel_option(self, name: str) -> Any:
        """A channel-specific option (CHANNEL_OPTIONS) as given, else its default."""
        _, default = CHANNEL_OPTIONS[self.channel][name]
        return self.options.get(name, default)

    def files(self) -> list[Path]:
        """Files the glob matches now, in a stable order (sorted path)."""
        return sorted(Path(p) for p in glob.glob(self.path, recursive=True) if Path(p).is_file())


@dataclass(frozen=True)
class SourcesConfig:
    path: Path
    start_date: dt.date | None  # None: not given; ingestion/start_date.py infers it from the files
    timezone: str
    sources: tuple[Source, ...]
    # Optional labelled truth (record_type, source_record_id, person_id) to score identity resolution
    # against; only evaluation reads it, never matching. The generated sample ships one.
    identity_truth: Path | None = None
    identity: tuple[tuple[str, object], ...] = ()  # (key, value) of the `identity:` section, as given
    report_lang: str = "en"  # the `report:` section's `lang`: the insight report's default language
    calendar: Path | None = None  # CSV of known event days (date,event) the sales forecasts use
    full_tests_weekday: int | None = None  # `tests:`: ISO weekday whose runs test every row (0: none)

    @property
    def dbt_vars(self) -> dict[str, object]:
        """The dbt vars this file sets (`dbt build --vars`): only the keys it gives."""
        weekday = {} if self.full_tests_weekday is None else {"full_tests_weekday": self.full_tests_weekday}
        return {
            **{
                f"identity_{key}": list(v) if isinstance(v, tuple) else v
                for key, v in self.identity
                if key != "fuzzy_match_threshold"
            },
            **weekday,
        }

    @property
    def fuzzy_match_threshold(self) -> float:
        threshold = dict(self.identity).get("fuzzy_match_threshold", FUZZY_MATCH_THRESHOLD)
        assert isinstance(threshold, int | float)  # _parse_identity checked it
        return float(threshold)

    def source(self, name: str) -> Source:
        for s in self.sources:
            if s.name == name:
                return s
        raise SourcesError(f"{self.path}: no source named {name!r}")


def _fail(path: Path, where: str, msg: str) -> SourcesError:
    return SourcesError(f"{path}: {where}: {msg}")


def _check_timezone(path: Path, where: str, tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise _fail(path, where, f"unknown timezone {tz!r}") from None
    return tz


def _parse_source(path: Path, i: int, raw: object, default_tz: str) -> Source:
    where = f"sources[{i}]"
    if not isinstance(raw, dict):
        raise _fail(path, where, "each source must be a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _fail(path, where, f"name {name!r} must be lower-case letters, digits and _ (a table name)")
    where = f"source {name!r}"
    unknown = set(raw) - {"name", "channel", "path", "format", "columns", "options"}
    if unknown:
        raise _fail(path, where, f"unknown keys {sorted(unknown)}")
    try:
        contract = contract_for(str(raw.get("channel")))
    except ValueError as e:
        raise _fail(path, where, str(e)) from None
    glob_path = raw.get("path")
    if not isinstance(glob_path, str) or not glob_path:
        raise _fail(path, where, "path is required (a file or glob)")
    if not Path(glob_path).is_absolute():
        glob_path = str((path.parent / glob_path).resolve())
    fmt = raw.get("format") or FORMATS.get(Path(glob_path).suffix.lower())
    if fmt not in set(FORMATS.values()):
        raise _fail(path, where, f"cannot tell the format of {glob_path!r}; set format: csv, jsonl, parquet or xlsx")
    columns = raw.get("columns") or {}
    if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
        raise _fail(path, where, "columns must map contract fields to column names")
    unknown_fields = [k for k in columns if k not in contract.names]
    if unknown_fields:
        raise _fail(path, where, f"fields {unknown_fields} are not in the {contract.channel} contract")
    missing = [f for f in contract.must_map if f not in columns]
    if missing:
        raise _fail(
            path, where, f"required fields {missing} of the {contract.channel} contract are not mapped in columns"
        )
    options = dict(raw.get("options") or {})
    own = CHANNEL_OPTIONS.get(contract.channel, {})
    bad = set(options) - OPTION_KEYS - set(own)
    if bad:
        raise _fail(path, where, f"unknown options {sorted(bad)}; known: {sorted(OPTION_KEYS | set(own))}")
    _check_channel_options(path, where, options, own)
    if "encoding" in options:
        try:
            codecs.lookup(str(options["encoding"]))
        except LookupError:
            raise _fail(
                path,
                where,
                f"unknown encoding {options['encoding']!r} (Python's codec names: gbk, gb18030, big5, "
                "utf-16, latin-1, ...)",
            ) from None
    tz = _check_timezone(path, where, str(options.get("timezone", default_tz)))
    return Source(name, contract.channel, glob_path, fmt, dict(columns), tz, options)


def _check_channel_options(
    path: Path, where: str, options: dict[str, Any], own: dict[str, tuple[type, object]]
) -> None:
    for name, (kind, _) in own.items():
        if name not in options:
            continue
        value = options[name]
        if kind is list and not (isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)):
            raise _fail(path, where, f"options.{name}: {value!r} must be a list of names, e.g. [holdout]")
        if kind is bool and not isinstance(value, bool):
            raise _fail(path, where, f"options.{name}: {value!r} must be true or false")
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise _fail(path, where, f"options.{name}: {value!r} must be a whole number of days, at least 1")


def load_sources(path: str | Path) -> SourcesConfig:
    """Read and check a sources file; raise SourcesError naming what is wrong."""
    path = Path(path).resolve()
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SourcesError(f"{path}: cannot read sources file: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise SourcesError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sources"), list) or not doc["sources"]:
        raise SourcesError(f"{path}: expected a top-level 'sources:' list with at least one source")
    partitions = doc.get("partitions") or {}
    start = partitions.get("start_date")
    if isinstance(start, str):
        try:
            start = dt.date.fromisoformat(start)
        except ValueError:
            pass  # reported below
    if start is not None and not isinstance(start, dt.date):
        raise SourcesError(
            f"{path}: partitions.start_date must be a date (YYYY-MM-DD, the first day of data) or left out"
        )
    tz = _check_timezone(path, "partitions", str(partitions.get("timezone", "UTC")))
    sources = tuple(_parse_source(path, i, raw, tz) for i, raw in enumerate(doc["sources"]))
    names = [s.name for s in sources]
    taken = sorted(set(names) & set(CONTRACTS))
    if taken:
        raise SourcesError(f"{path}: source names {taken} are taken by the channel views raw.<channel>; rename them")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SourcesError(f"{path}: source names must be unique; repeated: {dupes}")
    truth = doc.get("identity_truth")
    if truth is not None and not isinstance(truth, str):
        raise SourcesError(f"{path}: identity_truth must be a path to a CSV file")
    identity = _parse_identity(path, doc.get("identity") or {})
    truth_path = (path.parent / truth).resolve() if truth else None
    calendar = doc.get("calendar")
    if calendar is not None and not isinstance(calendar, str):
        raise SourcesError(f"{path}: calendar must be a path to a CSV file of date,event")
    return SourcesConfig(
        path,
        start,
        tz,
        sources,
        truth_path,
        identity,
        _parse_report_lang(path, doc.get("report")),
        (path.parent / calendar).resolve() if calendar else None,
        _parse_full_tests_weekday(path, doc.get("tests")),
    )


def _parse_full_tests_weekday(path: Path, section: object) -> int | None:
    """The `tests:` section: `full_tests_weekday`, the ISO weekday (1 Monday … 7 Sunday, UTC) whose
    runs test every row, or 0 for none (only full refreshes and first builds); None: dbt's default."""
    if section is None:
        return None
    if not isinstance(section, dict) or set(section) - {"full_tests_weekday"}:
        raise SourcesError(f"{path}: tests must be a mapping with the one key 'full_tests_weekday'")
    weekday = section.get("full_tests_weekday")
    if isinstance(weekday, bool) or not isinstance(weekday, int) or not 0 <= weekday <= 7:
        raise SourcesError(f"{path}: tests.full_tests_weekday: {weekday!r} is not an ISO weekday 1-7, or 0 for none")
    return weekday


REPORT_LANGUAGES = ("en", "zh")


def _parse_report_lang(path: Path, section: object) -> str:
    """The `report:` section: `lang: en|zh`, the insight report's default language (default en)."""
    if section is None:
        return "en"
    if not isinstance(section, dict) or set(section) - {"lang"}:
        raise SourcesError(f"{path}: report must be a mapping with the one key 'lang'")
    lang = section.get("lang", "en")
    if lang not in REPORT_LANGUAGES:
        raise SourcesError(f"{path}: report.lang: {lang!r} is not one of {list(REPORT_LANGUAGES)}")
    return str(lang)


def _parse_identity(path: Path, section: object) -> tuple[tuple[str, object], ...]:
    if not isinstance(section, dict):
        raise SourcesError(f"{path}: identity must be a mapping of settings")
    unknown = sorted(set(section) - set(IDENTITY_SETTINGS))
    if unknown:
        raise SourcesError(f"{path}: identity: unknown keys {unknown}; known: {sorted(IDENTITY_SETTINGS)}")
    for key, value in section.items():
        kind = IDENTITY_SETTINGS[key]
        if (
            not isinstance(value, kind)
            or isinstance(value, bool)
            or (isinstance(value, list) and not all(isinstance(v, str) for v in value))
        ):
            raise SourcesError(
                f"{path}: identity.{key}: {value!r} is not a {'list of strings' if kind is list else 'number'}"
            )
    threshold = section.get("fuzzy_match_threshold", FUZZY_MATCH_THRESHOLD)
    if not 0.5 <= threshold <= 1:  # below 0.5 a pair is not kept at all (identity.matching.REVIEW_THRESHOLD)
        raise SourcesError(f"{path}: identity.fuzzy_match_threshold: {threshold!r} is not between 0.5 and 1")
    # Hashable, as the config is: lists become tuples.
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in section.items()))
