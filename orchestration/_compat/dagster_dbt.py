"""dagster-dbt's private parts this project relies on, pinned by tests/test_compat.py."""

from __future__ import annotations

import functools
import json
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dagster_dbt import DagsterDbtTranslator, DbtCliResource
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


class InProcessDbtBuild:
    """A dbt command run in Dagster's own process (dbt's `dbtRunner`), which dagster-dbt 0.29 does
    not offer: each `dbt` subprocess spent about 4 s importing dbt and loading its parse before its
    first node, three times a build. The parse itself is made once per process (parsed_manifest).
    Same interface as the `DbtCliInvocation` it replaces where
    orchestration/dbt_assets.py uses it (stream, is_successful, get_error, get_artifact,
    target_path); dagster-dbt still selects the nodes of the Dagster selection and turns dbt's
    result events into Dagster's events, from the same events its subprocess would have printed.

    DuckDB only: dbt-spark's session method would start Spark's JVM in this process, beside the
    identity assets' own. dbt runs in a daemon thread, so that its events reach Dagster as nodes
    finish; a terminated run's process ends with dbt inside it, as a killed run's does (DuckDB
    recovers the build file from its write-ahead log on the next open)."""

    RESULTS = {"LogSeedResult", "LogModelResult", "LogSnapshotResult", "LogTestResult"}

    def __init__(self, args: Sequence[str], dbt: DbtCliResource, context, target_path: Path):
        from dagster_dbt.asset_utils import get_updated_cli_invocation_params_for_context

        params = get_updated_cli_invocation_params_for_context(context, {}, DagsterDbtTranslator())
        self.manifest, self.translator, self.project = (
            params.manifest,
            params.dagster_dbt_translator,
            params.dbt_project,
        )
        self.context, self.target_path = context, target_path
        project_dir = self.project.project_dir if self.project else dbt.project_dir
        # dbt writes manifest.json (tens of MB: a quarter of a second) after every command; only a
        # full build's is read (bench/floor.py), so other builds write just run_results.json (below).
        self.writes_manifest = "--full-refresh" in args
        dbt_vars = ["--vars", args[args.index("--vars") + 1]] if "--vars" in args else []
        project_options = [
            *(["--target", dbt.target] if dbt.target else []),
            *(["--profiles-dir", dbt.profiles_dir] if dbt.profiles_dir else []),
            *["--project-dir", str(project_dir)],
        ]
        self.parse_key = parse_key(Path(project_dir), [*dbt_vars, *project_options])
        paths = ["--target-path", str(target_path), "--log-path", str(target_path)]
        plain = ["--no-send-anonymous-usage-stats", "--no-use-colors"]
        self.argv = [
            *args,
            *([] if self.writes_manifest else ["--no-write-json"]),
            *(["--indirect-selection", params.indirect_selection] if params.indirect_selection else []),
            *params.selection_args,
            *project_options,
            *paths,
            *plain,
        ]
        self.parse_argv = ["parse", "--no-write-json", *dbt_vars, *project_options, *paths, *plain]
        self.errors: list[str] = []
        self.result: Any = None

    def _invoke(self, results: queue.Queue) -> None:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
        from dbt.cli.main import dbtRunner
        from dbt_common.events.functions import msg_to_dict

        def on_event(message) -> None:
            if message.info.level == "error":
                self.errors.append(message.info.msg)
            if message.info.name in self.RESULTS:
                results.put(msg_to_dict(message))

        try:
            self.result = dbtRunner(
                manifest=parsed_manifest(self.parse_argv, self.parse_key), callbacks=[on_event]
            ).invoke(self.argv)
            if not self.writes_manifest and hasattr(self.result.result, "write"):
                self.result.result.write(str(self.target_path / "run_results.json"))
        except BaseException as e:  # reported by get_error, as a failed subprocess's output would be
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            # dbt-duckdb keeps its database open between commands (`keep_open`); release the
            # warehouse file, which the next assets open with their own settings.
            DuckDBConnectionManager.close_all_connections()
            results.put(None)

    def stream(self) -> Iterator[Any]:
        from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage

        results: queue.Queue = queue.Queue()
        worker = threading.Thread(target=self._invoke, args=(results,), name="dbt", daemon=True)
        worker.start()
        while (raw := results.get()) is not None:
            if raw["data"]["node_info"]["unique_id"].startswith("unit_test"):
                continue
            event = DbtCoreCliEventMessage(raw_event=raw, event_history_metadata={})
            yield from event.to_default_asset_events(
                manifest=self.manifest,
                dagster_dbt_translator=self.translator,
                context=self.context,
                target_path=self.target_path,
                project=self.project,
            )
        worker.join()

    def is_successful(self) -> bool:
        return self.result is not None and self.result.success and not self.errors

    def get_error(self) -> Exception | None:
        if self.is_successful():
            return None
        from dagster_dbt.errors import DagsterDbtCliRuntimeError

        messages = "\n".join(["", "Errors parsed from dbt logs:", *self.errors]) if self.errors else ""
        return DagsterDbtCliRuntimeError(
            description=f"dbt {' '.join(self.argv)} failed; see {self.target_path / 'dbt.log'}.{messages}"
        )

    def get_artifact(self, name: str) -> dict:
        return json.loads((self.target_path / name).read_text())


_PARSED: dict[tuple, Any] = {}  # parse key -> dbt's Manifest
_PARSING = threading.Lock()
PROJECT_OUTPUTS = {"target", "logs", "dbt_packages"}


def parsed_manifest(parse_argv: list[str], key: tuple) -> Any:
    """dbt's parse of the project (`dbt parse` with `parse_argv`), made once per `key` (parse_key) in
    this process and handed to each later build (dbtRunner's `manifest`): loading even an unchanged
    parse took about a second of every build, three a run. None when it does not parse (the build
    then parses and reports why)."""
    from dbt.cli.main import dbtRunner

    with _PARSING:
        if key not in _PARSED:
            parsed = dbtRunner().invoke(parse_argv)
            if not parsed.success:
                return None
            _PARSED.clear()  # one project per process: the test suite's deployments would pile up
            _PARSED[key] = parsed.result
        return _PARSED[key]


def parse_key(project_dir: Path, options: list[str]) -> tuple:
    """What a parse depends on: the options (vars, target, profiles and project folders), every file
    of the project with its time and size, and the environment the profile and project read."""
    return (*options, *_project_files(project_dir), *_settings_in_environment())


def _project_files(project_dir: Path) -> list[tuple[str, int, int]]:
    """Each file of the dbt project (not what dbt writes in it) with its time and size: a changed
    file means a new parse."""
    files = []
    for folder, subfolders, names in os.walk(project_dir):
        if Path(folder) == project_dir:
            subfolders[:] = [s for s in subfolders if s not in PROJECT_OUTPUTS]
        for name in names:
            stat = (Path(folder) / name).stat()
            files.append((str(Path(folder) / name), stat.st_mtime_ns, stat.st_size))
    return sorted(files)


def _settings_in_environment() -> list[tuple[str, str]]:
    """The environment dbt's profile and project read (env_var): the warehouse path names the
    database in every parsed relation."""
    return sorted((k, v) for k, v in os.environ.items() if k.startswith(("CRM_", "DBT_")))
