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
