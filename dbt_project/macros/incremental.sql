{#- Incremental facts rebuild whole partition dates (delete+insert keyed on the date column, the
    grain the loader replaces raw data in): the dates whose source rows were loaded since the
    model last ran (and `spill_days` days before each: a web session that began the evening
    before). Rebuilt dates are recomputed from all their rows, so a full refresh gives the same
    table. A row's customer key is the identity map's for its record: on DuckDB a post-hook
    (rekey_rows) sets it again on the rows whose key has changed since (a cookie logged in, a fuzzy
    match, two customers merged), wherever they are; Spark, which cannot update plain Parquet,
    also rebuilds the dates holding such a row. `rows` and `identity` are CTE names of the model. -#}
{% macro incremental_dates_filter(date_column, rows, identity, spill_days=0) -%}
{%- if is_incremental() %}
    where {{ date_column }} in ({{ rebuilt_dates(date_column, rows, identity, spill_days) }})
{%- endif %}
{%- endmacro %}

{#- The dates an incremental run of such a model rebuilds (above), as a query. -#}
{% macro rebuilt_dates(date_column, rows, identity, spill_days=0) -%}
    {%- set loaded -%}
        select distinct {{ date_column }} as loaded_date from {{ rows }}
        where source_loaded_at > (
            select coalesce(max(built.source_loaded_at), cast('1900-01-01' as timestamp)) from {{ this }} as built
        )
    {%- endset %}
        {%- for days in range(0, spill_days + 1) %}
        select cast({{ dbt.dateadd('day', -days, 'loaded_date') }} as date) from ({{ loaded }}) as loaded
        {{- ' union all' if not loop.last or target.type != 'duckdb' }}
        {%- endfor %}
        {%- if target.type != 'duckdb' %}
        select previous.{{ date_column }}
        from {{ this }} as previous
        left join {{ identity }} on previous.identity_record_key = {{ identity }}.record_key
        where coalesce(previous.customer_key, '') <> coalesce({{ identity }}.customer_key, '')
        {%- endif %}
{%- endmacro %}

{#- customer_identity_map on DuckDB rebuilds only the records whose row the keys step marked stale
    (identity/duckdb.py, table intermediate.int_customer_keys_assigned__stale), and empties that
    table after; every record when the table is absent (after a full run of the keys). On Spark
    (no delete by key without Delta or Iceberg) a table, rebuilt each run. -#}
{% macro stale_identity_records() -%}
    {{ return(adapter.get_relation(database=this.database, schema='intermediate',
                                   identifier='int_customer_keys_assigned__stale')) }}
{%- endmacro %}

{% macro identity_map_config() -%}
    {%- if target.type != 'duckdb' %}{{ return({'materialized': 'table'}) }}{% endif -%}
    {{- return({
        'materialized': 'incremental', 'incremental_strategy': 'append', 'on_schema_change': 'fail',
        'pre_hook': "{{ identity_map_delete_rebuilt() }}",
        'post_hook': "{{ identity_map_rebuilt() }}",
    }) }}
{%- endmacro %}

{#- Whether this build rebuilds only the stale records (else every record). -#}
{% macro identity_map_scoped() -%}
    {{ return(is_incremental() and stale_identity_records() is not none) }}
{%- endmacro %}

{#- Pre-hook: the stale records' rows leave, their customers noted (macros/changed_customers.sql). -#}
{% macro identity_map_delete_rebuilt() -%}
    {%- if identity_map_scoped() -%}
        {%- set stale = "(record_type, record_id) in (select record_type, record_id from " ~ stale_identity_records() ~ ")" -%}
        {{ note_identity_changes('select distinct customer_key from ' ~ this ~ ' where ' ~ stale) }};
        delete from {{ this }} where {{ stale }}
    {%- elif is_incremental() -%}
        delete from {{ this }}
    {%- endif -%}
{%- endmacro %}

{#- The customer keys of `query` noted as changed, in both lists (macros/changed_customers.sql). -#}
{% macro note_identity_changes(query) -%}
    create or replace temp table _identity_noted as {{ query }};
    insert into main.dbt_changed_customers select * from _identity_noted;
    insert into main.dbt_identity_changed_customers select * from _identity_noted;
    drop table _identity_noted
{%- endmacro %}

{#- Post-hook: the rebuilt records' customers noted (every customer, NULL, when every record was
    rebuilt); the stale list emptied. -#}
{% macro identity_map_rebuilt() -%}
    {%- if identity_map_scoped() -%}
    {{ note_identity_changes('select distinct customer_key from ' ~ this ~ ' where (record_type, record_id) in '
                             ~ '(select record_type, record_id from ' ~ stale_identity_records() ~ ')') }};
    {%- else -%}
    {{ note_identity_changes('select cast(null as varchar)') }};
    {%- endif %}
    create or replace table intermediate.int_customer_keys_assigned__stale (record_type varchar, record_id varchar)
{%- endmacro %}

{#- int_web_events_sessionized: each row without an event (web_event_id NULL) names a redone cookie
    and the time it is redone from (NULL: all of it; an event without a time sorts last, so it is
    always redone); the cookie's rows from that time on leave, the events are inserted. -#}
{% macro get_incremental_sessions_redone_sql(arg_dict) -%}
    {%- set target, source = arg_dict['target_relation'], arg_dict['temp_relation'] -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    delete from {{ target }} as kept
    using (select cookie_id, event_at as redo_from from {{ source }} where web_event_id is null) as redo
    where kept.cookie_id = redo.cookie_id
        and (redo.redo_from is null or kept.event_at is null or kept.event_at >= redo.redo_from);
    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ source }} where web_event_id is not null
{%- endmacro %}
