"""The run tags that ask Dagster for a partition range in one run (single-run backfill policy).
Dagster exports no public name for them; tests/test_compat.py pins them to its private ones."""

ASSET_PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
