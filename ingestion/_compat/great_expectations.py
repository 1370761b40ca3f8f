"""great-expectations labels every pandas batch under a size threshold with a fingerprint (an MD5
of pandas' hash of every row) that nothing here reads, and no setting turns it off; it was half the
time of validating a year of web events. The threshold is a module constant of its pandas engine."""


def skip_batch_fingerprints() -> None:
    from great_expectations.execution_engine import pandas_execution_engine

    pandas_execution_engine.HASH_THRESHOLD = 0
