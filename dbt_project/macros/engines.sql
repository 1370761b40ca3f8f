{#- What differs between the engines beyond dbt's cross-database macros (DuckDB, and the default:
    Spark SQL). -#}

{#- A CTE read more than once that DuckDB should inline rather than copy (`not materialized`);
    Spark inlines CTEs anyway. -#}
{% macro inlined() -%}{{ return(adapter.dispatch('inlined', 'crm_warehouse')()) }}{%- endmacro %}
{% macro default__inlined() -%}{%- endmacro %}
{% macro duckdb__inlined() -%}not materialized{%- endmacro %}

{#- Rows of the left side with (semi) or without (anti) a match on the right. -#}
{% macro semi_join() -%}{{ return(adapter.dispatch('semi_join', 'crm_warehouse')()) }}{%- endmacro %}
{% macro default__semi_join() -%}left semi join{%- endmacro %}
{% macro duckdb__semi_join() -%}semi join{%- endmacro %}
{% macro anti_join() -%}{{ return(adapter.dispatch('anti_join', 'crm_warehouse')()) }}{%- endmacro %}
{% macro default__anti_join() -%}left anti join{%- endmacro %}
{% macro duckdb__anti_join() -%}anti join{%- endmacro %}

{#- on-run-start: on Spark, the raw sources are tables over the Parquet files the loader writes
    (ingestion/lake.py) under CRM_SPARK_DIR/lake/raw, declared again each run so that their schema
    and file listing are the current ones. DuckDB reads the raw views in its own file. -#}
{% macro register_raw_lake() -%}
    {%- if target.type == 'spark' and execute %}
        {%- set lake = env_var('CRM_SPARK_DIR', '../warehouse/spark') ~ '/lake/raw' %}
        {%- do run_query('create database if not exists raw') %}
        {%- for source in graph.sources.values() if source.source_name == 'raw' %}
            {%- set folder = source.name %}
            {%- do run_query('drop table if exists raw.`' ~ source.identifier ~ '`') %}
            {%- do run_query('create table raw.`' ~ source.identifier ~ '` using parquet location \'' ~ lake ~ '/' ~ folder ~ '\'') %}
        {%- endfor %}
    {%- endif %}
{%- endmacro %}

{#- Config of a model rebuilt by whole days (the facts): a run replaces the days its rows fall on.
    DuckDB deletes those days and inserts, noting the customers of the rows that changed
    for customer_360 (macros/changed_customers.sql); Spark overwrites the day partitions
    dynamically (insert_overwrite works on plain Parquet: no Delta or Iceberg needed). -#}
{% macro increments_by_day(date_column, lost_keys=none) -%}
    {%- if target.type == 'duckdb' %}
        {{- return({'materialized': 'incremental', 'incremental_strategy': 'customer_logged_delete_insert',
                    'unique_key': date_column, 'on_schema_change': 'fail', 'lost_keys': lost_keys,
                    'post_hook': "{{ rekey_rows() }}"}) }}
    {%- else %}
        {{- return({'materialized': 'incremental', 'incremental_strategy': 'insert_overwrite',
                    'partition_by': [date_column], 'on_schema_change': 'fail'}) }}
    {%- endif %}
{%- endmacro %}

{#- Config of a model summed by key from a daily fact (orders from their lines, payments from their
    orders). On DuckDB a run replaces the keys with a source row loaded since the model's newest
    `source_loaded_at` (keys_loaded_since), noting their customers; then the rows re-keyed since take
    their new key (rekey_rows). The keys whose rows `parent` lost are summed again, and leave when
    the parent holds none (macros/lost_keys.sql). Spark rebuilds the table. -#}
{% macro increments_by_key(key, parent, parent_key, notes_lost_keys=false) -%}
    {%- if target.type == 'duckdb' %}
        {{- return({'materialized': 'incremental', 'incremental_strategy': 'customer_logged_delete_insert',
                    'unique_key': key, 'on_schema_change': 'fail',
                    'post_hook': ["{{ rekey_rows() }}",
                                  "{{ consume_lost_keys('" ~ parent ~ "', '" ~ parent_key ~ "', " ~ notes_lost_keys ~ ") }}"]}) }}
    {%- else %}
        {{- return({'materialized': 'table'}) }}
    {%- endif %}
{%- endmacro %}

{#- On an incremental run, a filter of `relation`'s rows to the `key`s with a row loaded since the
    model's newest source_loaded_at, and those `relation` lost rows of (macros/lost_keys.sql). -#}
{% macro keys_loaded_since(key, relation) -%}
    {%- if is_incremental() %}
    where {{ key }} in (
        select {{ key }} from {{ relation }}
        where source_loaded_at > (
            select coalesce(max(built.source_loaded_at), cast('1900-01-01' as timestamp)) from {{ this }} as built
        )
        union all
        {{ lost_keys_of(relation) }}
    )
    {%- endif %}
{%- endmacro %}

{#- The last non-null value of `expr` in a window frame (put `over (...)` after it). -#}
{% macro last_non_null(expr) -%}{{ return(adapter.dispatch('last_non_null', 'crm_warehouse')(expr)) }}{%- endmacro %}
{% macro default__last_non_null(expr) -%}last({{ expr }}, true){%- endmacro %}
{% macro duckdb__last_non_null(expr) -%}last_value({{ expr }} ignore nulls){%- endmacro %}

{#- A struct of (name, expression) pairs, and the value of the row with the greatest ordering. -#}
{% macro struct_of(fields) -%}{{ return(adapter.dispatch('struct_of', 'crm_warehouse')(fields)) }}{%- endmacro %}
{% macro default__struct_of(fields) -%}
    named_struct({% for name, expr in fields %}'{{ name }}', {{ expr }}{{ ', ' if not loop.last }}{% endfor %})
{%- endmacro %}
{% macro duckdb__struct_of(fields) -%}
    struct_pack({% for name, expr in fields %}{{ name }} := {{ expr }}{{ ', ' if not loop.last }}{% endfor %})
{%- endmacro %}
{% macro arg_max(value, ordering) -%}{{ return(adapter.dispatch('arg_max', 'crm_warehouse')(value, ordering)) }}{%- endmacro %}
{% macro default__arg_max(value, ordering) -%}max_by({{ value }}, {{ ordering }}){%- endmacro %}
{% macro duckdb__arg_max(value, ordering) -%}arg_max({{ value }}, {{ ordering }}){%- endmacro %}

{#- The distinct non-null values of `expr`, sorted, joined by `delimiter` (a SQL string literal).
    dbt-spark's listagg drops the ordering. -#}
{% macro joined_distinct(expr, delimiter) -%}{{ return(adapter.dispatch('joined_distinct', 'crm_warehouse')(expr, delimiter)) }}{%- endmacro %}
{% macro default__joined_distinct(expr, delimiter) -%}
    nullif(array_join(array_sort(collect_set({{ expr }})), {{ delimiter }}), '')
{%- endmacro %}
{% macro duckdb__joined_distinct(expr, delimiter) -%}
    {{ dbt.listagg("distinct " ~ expr, delimiter, "order by " ~ expr) }}
{%- endmacro %}
