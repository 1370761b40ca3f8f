"""dagster-dbt's private parts this project relies on, pinned by tests/test_compat.py."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from dagster_dbt import DbtCliResource
from packaging.version import Version


class InstalledDbtCli(DbtCliResource):
    """dagster-dbt's dbt resource, without two costs of every build that this project does not use:
    it is told dbt's version rather than asking `dbt --version` in a subprocess (dbt-core is
    installed in this environment), and it opens no dbt adapter of its own in Dagster's
    process (loading dbt's profile, project and DuckDB adapter), which dagster-dbt
    needs only for `fetch_row_counts` and `fetch_column_metadata`. Its invocations then carry no
    adapter, as they do under dbt Fusion."""

    @functools.cached_property
    def _cli_version(self) -> Version:
        from dbt.version import __version__

        return Version(__version__)

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> None:
        return None
