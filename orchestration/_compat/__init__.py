"""Every use of a private API of Dagster or dagster-dbt, one module per integration, so that an
upgrade that changes one breaks here, loudly, in tests/test_compat.py, and nowhere else:
- dagster_event_log: a subclass of Dagster's SQLite event-log storage that batches writes;
- dagster_tags: the run tags that ask for a partition range in one run;
- dagster_dbt: dagster-dbt's per-invocation target folder, and its dbt resource without two costs.
"""
