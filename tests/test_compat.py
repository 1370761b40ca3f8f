"""The private APIs of Dagster, dagster-dbt, great-expectations and scikit-learn that
orchestration/_compat/, ingestion/_compat/ and ml/_compat/ rely on: each test fails loudly when an upgrade moves or changes one."""

from __future__ import annotations

import inspect
import sqlite3
from contextlib import closing
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster_dbt import DagsterDbtTranslator, DbtCliResource

from orchestration._compat import dagster_tags
from orchestration._compat.dagster_dbt import InstalledDbtCli, parse_key, parsed_manifest
from orchestration._compat.dagster_event_log import BatchingSqliteEventLogStorage
from orchestration.dbt_assets import DBT_DIR, dbt_project
from orchestration.settings import DBT_EXECUTABLE


def _parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_partition_range_tags_are_dagsters() -> None:
    from dagster._core.storage import tags

    assert dagster_tags.ASSET_PARTITION_RANGE_START_TAG == tags.ASSET_PARTITION_RANGE_START_TAG
    assert dagster_tags.ASSET_PARTITION_RANGE_END_TAG == tags.ASSET_PARTITION_RANGE_END_TAG


def test_the_sqlite_event_log_still_has_what_the_batching_storage_overrides_and_calls(tmp_path) -> None:
    for method, parameters in {
        "_connect": ["self", "shard"],
        "_initdb": ["self", "engine"],
        "store_event_batch": ["self", "events"],
        "run_connection": ["self", "run_id"],
        "index_transaction": ["self"],
        "prepare_insert_event": ["self", "event"],
        "prepare_insert_event_batch": ["self", "events"],
        "_store_asset_event_tags": ["self", "conn", "events", "event_ids"],
        "_store_asset_event": ["self", "conn", "event", "event_id"],
        "wipe": ["self"],
        "dispose": ["self"],
    }.items():
        assert _parameters(getattr(SqliteEventLogStorage, method))[: len(parameters)] == parameters, method
    storage = BatchingSqliteEventLogStorage(base_dir=str(tmp_path) + "/")
    assert hasattr(storage, "_db_lock") and hasattr(storage, "_initialized_dbs") and hasattr(storage, "_base_dir")
    # Commits sync at checkpoints only (NORMAL), which keeps the file whole only on Dagster's WAL journal.
    with storage.run_connection("a-run") as conn:
        assert conn.exec_driver_sql("pragma synchronous").scalar() == 1
    storage.dispose()
    for shard in ("a-run", "index"):
        with closing(sqlite3.connect(tmp_path / f"{shard}.db")) as db:
            assert db.execute("pragma journal_mode").fetchone() == ("wal",)


def test_dagster_dbt_still_has_what_the_dbt_resource_overrides_and_calls() -> None:
    assert _parameters(DbtCliResource._initialize_dbt_core_adapter) == ["self", "args"]
    assert isinstance(
        inspect.getattr_static(DbtCliResource, "_cli_version"), property | type(InstalledDbtCli._cli_version)
    )
    from dbt.version import __version__

    resource = InstalledDbtCli(project_dir=dbt_project(), profiles_dir=str(DBT_DIR), dbt_executable=DBT_EXECUTABLE)
    assert str(resource._cli_version) == __version__
    assert isinstance(resource, dg.ConfigurableResource)


def test_dagster_dbt_still_has_what_the_in_process_build_calls() -> None:
    """InProcessDbtBuild asks dagster-dbt for the selection and for the events of dbt's results."""
    from dagster_dbt.asset_utils import get_updated_cli_invocation_params_for_context
    from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage

    assert _parameters(get_updated_cli_invocation_params_for_context)[:3] == [
        "context",
        "manifest",
        "dagster_dbt_translator",
    ]
    params = get_updated_cli_invocation_params_for_context(None, {}, DagsterDbtTranslator())
    assert (params.selection_args, params.indirect_selection, params.dbt_project) == ([], None, None)
    assert {"manifest", "dagster_dbt_translator"} <= set(dir(params))
    event = DbtCoreCliEventMessage(
        raw_event={"info": {"name": "LogModelResult"}, "data": {}}, event_history_metadata={}
    )
    assert list(event.to_default_asset_events(manifest={"nodes": {}})) == []  # no node: nothing to report
    assert _parameters(DbtCoreCliEventMessage.to_default_asset_events)[1:6] == [
        "manifest",
        "dagster_dbt_translator",
        "context",
        "target_path",
        "project",
    ]


def test_dbt_duckdb_releases_the_warehouse_file_once_its_connections_are_closed(tmp_path: Path, monkeypatch) -> None:
    """dbt-duckdb keeps its database open after a command in this process (`keep_open`); the next
    assets open the warehouse with other settings, which DuckDB refuses while it is open."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    from dbt.cli.main import dbtRunner

    warehouse = tmp_path / "crm.duckdb"
    monkeypatch.setenv("CRM_WAREHOUSE", str(warehouse))
    target = tmp_path / "target"
    shown = dbtRunner().invoke(
        ["show", "--inline", "select 1 as x", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR)]
        + ["--target-path", str(target), "--log-path", str(target), "--quiet"]
    )
    assert shown.success
    with pytest.raises(duckdb.ConnectionException, match="different configuration"):
        duckdb.connect(str(warehouse), config={"threads": 1})
    DuckDBConnectionManager.close_all_connections()
    duckdb.connect(str(warehouse), config={"threads": 1}).close()


def test_a_build_reuses_the_process_parse_of_the_dbt_project_until_a_file_of_it_changes(
    tmp_path: Path, monkeypatch
) -> None:
    """dbtRunner(manifest=...) skips dbt's parse; a parse must still follow every change to the project."""
    import shutil

    from dbt.cli.main import dbtRunner

    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    monkeypatch.setenv("CRM_WAREHOUSE", str(tmp_path / "crm.duckdb"))
    options = ["--project-dir", str(project), "--profiles-dir", str(project)]
    target = ["--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "target"), "--quiet"]
    argv = ["parse", "--no-write-json", *options, *target]
    first = parsed_manifest(argv, parse_key(project, options))
    assert first is not None and first is parsed_manifest(argv, parse_key(project, options))
    model = project / "models" / "marts" / "dim_channel.sql"
    model.write_text(model.read_text().replace("select * from final", "select * from final where true"))
    changed = parsed_manifest(argv, parse_key(project, options))
    assert changed is not first
    assert "where true" in changed.nodes["model.crm_warehouse.dim_channel"].raw_code
    listed = dbtRunner(manifest=changed).invoke(
        ["ls", "--select", "dim_channel", "--resource-type", "model", *options, *target]
    )
    assert listed.success and listed.result == ["crm_warehouse.marts.dim_channel"]


def test_great_expectations_batches_are_not_fingerprinted() -> None:
    """GX hashes every small pandas batch only to label it; ingestion/_compat switches that off
    through a module constant of GX's pandas engine. If GX moves it, this fails, not silently slows."""
    from ingestion.quality import _batch_definition

    batch = _batch_definition().get_batch(batch_parameters={"dataframe": pd.DataFrame({"a": range(1000)})})
    assert "pandas_data_fingerprint" not in batch.batch_markers


def test_the_boosted_trees_private_arrays_move_the_log_odds_as_scikit_learn_predicts() -> None:
    """ml/_compat reads scikit-learn's private tree nodes (thresholds, where missing values go);
    moving one feature to a reference along them equals predicting the changed rows with sklearn."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from ml._compat.sklearn_trees import tree_arrays
    from ml.tree_explanations import moved_to_reference

    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 5))
    x[::4, 1] = np.nan  # missing in training: the trees learn where it goes
    y = (x[:, 0] + np.nan_to_num(x[:, 1]) * x[:, 2] + 0.5 * rng.normal(size=4000) > 0).astype(int)
    model = HistGradientBoostingClassifier(max_iter=30, max_leaf_nodes=15, random_state=0).fit(x, y)
    rows = x[:500].copy()
    rows[::7, 3] = np.nan  # missing only when scored
    reference = np.array([0.1, np.nan, -0.2, 0.3, 0.0])
    expected = np.column_stack(
        [
            model.decision_function(rows) - model.decision_function(np.where(np.arange(5) == j, reference, rows))
            for j in range(5)
        ]
    )
    moved, raw = moved_to_reference(tree_arrays(model), rows, reference)
    np.testing.assert_allclose(moved, expected, atol=1e-12)
    assert np.array_equal(raw, model.decision_function(rows))  # summed in scikit-learn's order: equal, not close


def test_a_calibrated_probability_from_the_trees_log_odds_equals_scikit_learns() -> None:
    """The repurchase scores take P from the log-odds the explanation walk sums
    (ml._compat.sklearn_trees.calibrated_probability), not from predicting again: the same floats."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    from ml._compat.sklearn_trees import calibrated_probability, tree_arrays
    from ml.churn import boosted_trees
    from ml.tree_explanations import moved_to_reference

    rng = np.random.default_rng(2)
    x = rng.normal(size=(3000, 4))
    x[::5, 2] = np.nan
    y = (x[:, 0] - x[:, 1] + rng.normal(size=3000) > 0).astype(int)
    for method in ("sigmoid", "isotonic"):
        model = CalibratedClassifierCV(FrozenEstimator(boosted_trees().fit(x[:2000], y[:2000])), method=method)
        model.fit(x[2000:], y[2000:])
        base = model.calibrated_classifiers_[0].estimator.estimator
        _, raw = moved_to_reference(tree_arrays(base.steps[-1][1]), base[:-1].transform(x), np.zeros(4))
        assert np.array_equal(calibrated_probability(model, raw), model.predict_proba(x)[:, 1]), method
