"""Contracts and the sources file: what loads, and the errors a user gets for a bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.contracts import CONTRACTS, contracts_markdown
from ingestion.sources import SourcesError, load_sources
from orchestration.settings import REPO_ROOT
from tests.conftest import ONLINE_RETAIL_SOURCES, SAMPLE_SOURCES


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.yml"
    path.write_text(text)
    return path


GOOD = """
partitions: {start_date: 2024-01-01}
sources:
  - name: shop
    channel: store
    path: data/*.csv
    columns: {order_id: InvoiceNo, ordered_at: InvoiceDate, sku: StockCode, quantity: Qty, unit_price: Price}
"""


def test_shipped_sources_files_load() -> None:
    sample = load_sources(SAMPLE_SOURCES)
    assert {s.channel for s in sample.sources} == set(CONTRACTS)
    retail = load_sources(ONLINE_RETAIL_SOURCES)
    (source,) = retail.sources
    assert source.format == "parquet" and source.timezone == "Europe/London"
    assert Path(source.path).is_file()


def test_relative_paths_resolve_against_the_sources_file(tmp_path: Path) -> None:
    config = load_sources(write(tmp_path, GOOD))
    assert config.sources[0].path == str(tmp_path / "data" / "*.csv")
    assert config.sources[0].format == "csv"
    # line_number is required but derivable: a source need not map it.
    assert "line_number" not in config.sources[0].columns


def test_unknown_channel_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourcesError, match=r"source 'shop'.*unknown channel 'till'.*known: web, store"):
        load_sources(write(tmp_path, GOOD.replace("channel: store", "channel: till")))


def test_missing_required_mapping_is_named(tmp_path: Path) -> None:
    text = GOOD.replace("sku: StockCode, ", "")
    with pytest.raises(SourcesError, match=r"source 'shop'.*required fields \['sku'\].*not mapped"):
        load_sources(write(tmp_path, text))


def test_unknown_field_and_option_are_named(tmp_path: Path) -> None:
    with pytest.raises(SourcesError, match=r"fields \['colour'\] are not in the store contract"):
        load_sources(write(tmp_path, GOOD.replace("Price}", "Price, colour: Colour}")))
    with pytest.raises(SourcesError, match=r"unknown options \['speed'\]"):
        load_sources(write(tmp_path, GOOD + "    options: {speed: fast}\n"))
    with pytest.raises(SourcesError, match=r"unknown timezone 'Mars/Base'"):
        load_sources(write(tmp_path, GOOD + "    options: {timezone: Mars/Base}\n"))


def test_unreadable_sources_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SourcesError, match=r"cannot read sources file"):
        load_sources(tmp_path / "missing.yml")
    with pytest.raises(SourcesError, match=r"not valid YAML"):
        load_sources(write(tmp_path, "sources: [\n"))
    assert load_sources(write(tmp_path, GOOD.replace("partitions: {start_date: 2024-01-01}", ""))).start_date is None
    with pytest.raises(SourcesError, match=r"partitions.start_date must be a date"):
        load_sources(write(tmp_path, GOOD.replace("start_date: 2024-01-01", "start_date: soon")))
    with pytest.raises(SourcesError, match=r"unknown encoding 'klingon'"):
        load_sources(
            write(tmp_path, GOOD.replace("sources:", "sources:", 1).rstrip() + "\n    options: {encoding: klingon}\n")
        )
    with pytest.raises(SourcesError, match=r"identity: unknown keys \['guard_max_persons'\]"):
        load_sources(write(tmp_path, GOOD + "identity: {guard_max_persons: 2}\n"))
    with pytest.raises(SourcesError, match=r"names must be unique"):
        load_sources(write(tmp_path, GOOD + GOOD.split("sources:")[1]))


def test_identity_section_sets_dbt_vars_and_the_fuzzy_threshold(tmp_path: Path) -> None:
    """The guard's settings become dbt vars; the fuzzy threshold is the identity assets' own."""
    config = load_sources(write(tmp_path, GOOD + "identity: {guard_max_people: 2, fuzzy_match_threshold: 0.96}\n"))
    assert config.dbt_vars == {"identity_guard_max_people": 2} and config.fuzzy_match_threshold == 0.96
    assert load_sources(write(tmp_path, GOOD)).fuzzy_match_threshold == 0.99
    with pytest.raises(SourcesError, match=r"fuzzy_match_threshold: 0.3 is not between 0.5 and 1"):
        load_sources(write(tmp_path, GOOD + "identity: {fuzzy_match_threshold: 0.3}\n"))


def test_tests_section_sets_the_full_test_weekday(tmp_path: Path) -> None:
    """The weekly day that tests every row is a dbt var the sources file may set; 0 is no such day."""
    config = load_sources(write(tmp_path, GOOD + "tests: {full_tests_weekday: 0}\n"))
    assert config.dbt_vars == {"full_tests_weekday": 0}
    assert load_sources(write(tmp_path, GOOD)).dbt_vars == {}
    with pytest.raises(SourcesError, match=r"tests.full_tests_weekday: 8 is not an ISO weekday 1-7, or 0 for none"):
        load_sources(write(tmp_path, GOOD + "tests: {full_tests_weekday: 8}\n"))


def test_contract_docs_are_generated_from_the_contracts() -> None:
    docs = (REPO_ROOT / "docs" / "contracts.md").read_text()
    assert docs.strip() == contracts_markdown().strip(), "run `crm contracts --write docs/contracts.md`"
