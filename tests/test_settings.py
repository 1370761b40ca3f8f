"""Settings are decided once, from options, then the environment, then defaults; only
settings.hand_to_processes writes the environment."""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import duckdb

from orchestration.settings import DEFAULT_SOURCES, REPO_ROOT, Settings
from tests.conftest import dbt_profile_rendered


def test_options_win_over_the_environment_which_wins_over_defaults(tmp_path: Path) -> None:
    environ = {"CRM_WAREHOUSE": str(tmp_path / "env.duckdb"), "CRM_DBT_THREADS": "1", "CRM_ML_CONFIG": "ml.yml"}
    before = dict(os.environ)
    settings = Settings.load(warehouse=tmp_path / "option.duckdb", environ=environ)
    assert settings.warehouse == (tmp_path / "option.duckdb").resolve()
    assert settings.sources_file == DEFAULT_SOURCES.resolve()
    assert settings.dbt_threads == 1 and settings.keep_versions == 3
    assert settings.dbt_full_build_threads == 1  # CRM_DBT_THREADS's, unless set apart
    full = Settings.load(environ={**environ, "CRM_DBT_FULL_BUILD_THREADS": "3"})
    assert (full.dbt_threads, full.dbt_full_build_threads) == (1, 3)
    assert settings.ml_config == Path("ml.yml").resolve()
    assert Settings.load(environ=environ).warehouse == (tmp_path / "env.duckdb").resolve()
    assert dict(os.environ) == before  # reading settings changes nothing


def test_dbts_duckdb_settings_are_those_of_our_connections(tmp_path: Path) -> None:
    """dbt's profile renders the memory limit our connections open with."""
    settings = Settings.load(warehouse=tmp_path / "crm.duckdb", environ={"CRM_DUCKDB_MEMORY_LIMIT": "3GB"})
    env = {**os.environ, "CRM_DUCKDB_MEMORY_LIMIT": settings.memory_limit}  # as hand_to_processes sets it
    assert dbt_profile_rendered("duckdb", "settings", env) == {"memory_limit": settings.duckdb_config["memory_limit"]}
    with duckdb.connect(str(settings.warehouse), config=settings.duckdb_config) as con:
        assert con.execute("select current_setting('memory_limit')").fetchall() == [("2.7 GiB",)]


def test_masking_key_is_the_environments_or_one_kept_beside_the_warehouse(tmp_path: Path) -> None:
    given = Settings.load(warehouse=tmp_path / "crm.duckdb", environ={"CRM_MASKING_KEY": "secret"})
    assert given.masking_key() == "secret" and "secret" not in repr(given)
    made = Settings.load(warehouse=tmp_path / "crm.duckdb", environ={})
    key = made.masking_key()
    path = made.governance_dir / "masking.key"
    assert len(key) == 64 and path.read_text() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings.load(warehouse=tmp_path / "crm.duckdb", environ={}).masking_key() == key  # kept, not redrawn


def _writes_environ(tree: ast.AST) -> list[int]:
    """Lines that assign to os.environ[...] or call a mutating method of os.environ."""
    lines = []
    for node in ast.walk(tree):
        target = None
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            target = next((t.value for t in targets if isinstance(t, ast.Subscript)), None)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in {"setdefault", "update", "pop", "clear", "__setitem__"}:
                target = node.func.value
        if target is not None and ast.unparse(target) == "os.environ":
            lines.append(node.lineno)
    return lines


def test_only_the_settings_module_writes_the_environment() -> None:
    writers = {}
    for package in ("ingestion", "ml", "serving", "orchestration"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            lines = _writes_environ(ast.parse(path.read_text()))
            if lines:
                writers[str(path.relative_to(REPO_ROOT))] = lines
    assert set(writers) == {"orchestration/settings.py"}, writers
