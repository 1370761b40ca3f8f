{#- Incremental facts rebuild whole partition dates (delete+insert keyed on the date column, the
    grain the loader replaces raw data in): the dates whose source rows were loaded since the
    model last ran (and `spill_days` days before each: a web session that began the evening
    before), and the dates holding a row whose customer key has changed since (a cookie logged in,
    a fuzzy match, two customers merged). Rebuilt dates are recomputed from all their rows, so a
    full refresh gives the same table. `rows` and `identity` are CTE names of the model. -#}
{% macro incremental_dates_filter(date_column, rows, identity, spill_days=0) -%}
{%- if is_incremental() %}
    {%- set loaded -%}
        select distinct {{ date_column }} as loaded_date from {{ rows }}
        where source_loaded_at > (
            select coalesce(max(built.source_loaded_at), cast('1900-01-01' as timestamp)) from {{ this }} as built
        )
    {%- endset %}
    where {{ date_column }} in (
        {%- for days in range(0, spill_days + 1) %}
        select cast({{ dbt.dateadd('day', -days, 'loaded_date') }} as date) from ({{ loaded }}) as loaded
        union all
        {%- endfor %}
        select previous.{{ date_column }}
        from {{ this }} as previous
        left join {{ identity }} on previous.identity_record_key = {{ identity }}.record_key
        where coalesce(previous.customer_key, '') <> coalesce({{ identity }}.customer_key, '')
    )
{%- endif %}
{%- endmacro %}

{#- A Python model that returns its whole new table from its previous rows (int_profiles_matched
    keeps the pairs of unchanged profiles and scores the others again): replace every row, in the
    materialization's transaction. An incremental model rather than a table, so that
    `--full-refresh` reaches the model (dbt.is_incremental). -#}
{% macro get_incremental_replace_all_sql(arg_dict) -%}
    {%- set columns = get_quoted_csv(arg_dict["dest_columns"] | map(attribute="name")) -%}
    delete from {{ arg_dict["target_relation"] }};
    insert into {{ arg_dict["target_relation"] }} ({{ columns }})
    select {{ columns }} from {{ arg_dict["temp_relation"] }};
    {{ python_result_dropped(arg_dict) }}
{%- endmacro %}

{#- delete+insert for a Python model (int_customer_keys_assigned). -#}
{% macro get_incremental_python_delete_insert_sql(arg_dict) -%}
    {{ get_incremental_delete_insert_sql(arg_dict) }};
    {{ python_result_dropped(arg_dict) }}
{%- endmacro %}

{#- dbt-duckdb 1.11 writes a Python model's incremental result to a table in `main` that it takes
    for a temporary one and never drops: one more copy each run. -#}
{% macro python_result_dropped(arg_dict) -%}
    drop table if exists {{ arg_dict["temp_relation"] }}
{%- endmacro %}
