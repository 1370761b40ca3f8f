"""Identity resolution on Spark: the fuzzy profile pairs and the stable customer keys, written as
the Parquet tables `intermediate.int_profiles_matched` and `intermediate.int_customer_keys_assigned`
that the dbt models read on the Spark engine (on DuckDB, two dbt Python models write them).

The same model and rules as on DuckDB (identity.matching, identity.keys): Splink's Spark backend
scores the pairs (its similarity functions come from the jar in Splink's wheel), Splink's SQL
clustering finds the connected components of records and identifiers, and the keys are given by
identity.keys on the driver, one row per identifier. Every run scores and clusters everything: the
incremental paths of the DuckDB models are not ported (docs/spark.md).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from identity.keys import COLUMNS as KEY_COLUMNS
from identity.keys import GUARDED_EDGES_SQL, PREVIOUS, Assigned, keys_of_components
from identity.matching import COLUMNS as PAIR_TABLE_COLUMNS
from identity.matching import PAIR_COLUMNS, REVIEW_THRESHOLD, Matched, trained_linker

PAIRS = "intermediate.int_profiles_matched"
KEYS = "intermediate.int_customer_keys_assigned"
RUNS = "intermediate.int_customer_keys_assigned__runs"
PROFILES = "staging.stg_customers__profiles"


def match_profiles(spark: Any, threshold: float) -> Matched:
    """Score the pairs of current profiles into PAIRS: every profile is searched each run."""
    from splink.backends.spark import SparkAPI

    spark.sql(f"""
        select customer_ref, full_name, birth_date, city, gender from (
            select *, row_number() over (
                partition by customer_ref order by updated_at desc, profile_version_id desc) as version_rank
            from {PROFILES} where full_name is not null and birth_date is not null
        ) where version_rank = 1
    """).createOrReplaceTempView("identity_current_profiles")
    profiles = spark.table("identity_current_profiles").cache()
    n = profiles.count()
    loaded_at, versions = spark.sql(f"select max(source_loaded_at), count(*) from {PROFILES}").first()
    if n < 2:
        pairs = spark.createDataFrame(pd.DataFrame({c: pd.Series(dtype=t) for c, t in PAIR_COLUMNS.items()}))
    else:
        has_exact_duplicates = bool(
            profiles.groupBy("full_name", "birth_date", "city").count().where("count > 1").limit(1).count()
        )
        linker, _ = trained_linker(SparkAPI(spark_session=spark), profiles, n, has_exact_duplicates, "spark")
        scored = linker.inference.predict(threshold_match_probability=REVIEW_THRESHOLD).as_spark_dataframe()
        pairs = scored.withColumnRenamed("birth_date_l", "birth_date").select(*PAIR_COLUMNS)
    pairs.createOrReplaceTempView("identity_pairs")
    table = spark.sql(
        f"""
        select customer_ref_l, customer_ref_r, cast(match_probability as double) as match_probability,
               cast(match_weight as double) as match_weight, full_name_l, full_name_r,
               cast(birth_date as timestamp) as birth_date, city_l, city_r,
               match_probability >= {float(threshold)} as is_accepted,
               cast(? as timestamp) as profiles_loaded_at, cast(? as bigint) as profile_versions
        from identity_pairs
    """,
        args=[loaded_at, versions],
    ).select(*PAIR_TABLE_COLUMNS)
    table.write.mode("overwrite").format("parquet").saveAsTable(PAIRS)
    profiles.unpersist()
    written = spark.table(PAIRS)
    return Matched(written.count(), written.where("is_accepted").count(), "full", n)


def assign_customer_keys(spark: Any) -> Assigned:
    """Components of the guarded identity graph into KEYS, keys kept from its previous rows: every
    component is recomputed each run."""
    from splink.backends.spark import SparkAPI
    from splink.clustering import cluster_pairwise_predictions_at_threshold

    edges = spark.sql(
        GUARDED_EDGES_SQL.format(
            collected="intermediate.int_identifiers_collected", guarded="intermediate.int_identifier_quality"
        )
    )
    edges.createOrReplaceTempView("identity_edges")
    # Records and identifiers are the graph's nodes; a record links to each identifier it carries.
    graph = spark.sql("""
        select concat('r|', record_type, '|', record_id) as record_node,
               concat('i|', identifier_type, '|', identifier_value) as identifier_node,
               identifier_type, identifier_value
        from identity_edges
    """).cache()
    nodes = graph.selectExpr("record_node as node_id").union(graph.selectExpr("identifier_node as node_id")).distinct()
    clusters = cluster_pairwise_predictions_at_threshold(
        nodes,
        graph.select("record_node", "identifier_node"),
        SparkAPI(spark_session=spark),
        node_id_column_name="node_id",
        edge_id_column_name_left="record_node",
        edge_id_column_name_right="identifier_node",
    ).as_spark_dataframe()
    clusters.createOrReplaceTempView("identity_clusters")
    graph.createOrReplaceTempView("identity_graph")
    has_previous = spark.catalog.tableExists(KEYS)
    previous = f"left join {KEYS} as p using (identifier_type, identifier_value)" if has_previous else ""
    previous_columns = ", ".join(f"p.{c}" if has_previous else f"cast(null as string) as {c}" for c in PREVIOUS)
    identifiers = spark.sql(f"""
        with identifier_clusters as (
            select distinct g.identifier_type, g.identifier_value, c.cluster_id as component
            from identity_graph as g inner join identity_clusters as c on c.node_id = g.identifier_node
        ),
        cluster_records as (
            select cluster_id as component, count(*) as component_records
            from identity_clusters where node_id like 'r|%' group by cluster_id
        )
        select i.identifier_type, i.identifier_value, i.component, r.component_records, {previous_columns}
        from identifier_clusters as i inner join cluster_records as r using (component)
        {previous}
        order by i.identifier_value, i.identifier_type
    """).toPandas()
    graph.unpersist()
    prev = identifiers[PREVIOUS] if has_previous else None
    keys = keys_of_components(
        identifiers[["identifier_type", "identifier_value", "component", "component_records"]], prev
    )
    written = spark.createDataFrame(keys[KEY_COLUMNS], schema=_KEYS_SCHEMA)
    written.write.mode("overwrite").format("parquet").saveAsTable(KEYS)
    spark.sql(f"""
        create table if not exists {RUNS} (
            run_at timestamp, path string, edges_changed bigint, records_recomputed bigint, rows_written bigint)
        using parquet
    """)
    records = spark.sql("select count(distinct record_type, record_id) from identity_edges").first()[0]
    spark.sql(f"insert into {RUNS} select current_timestamp(), 'full', cast(null as bigint), {records}, {len(keys)}")
    return Assigned(len(keys), int(keys["customer_key"].nunique()), "full", records)


_KEYS_SCHEMA = (
    "identifier_type string, identifier_value string, customer_key string, assigned_at timestamp, "
    "previous_customer_key string, merged_at timestamp, key_change string, component_records bigint"
)
