-- One row per calendar day, from January 1st of the year of the earliest partition date any
-- channel holds to December 31st of the year var date_spine_horizon_days after the latest (room
-- for forecasts): computed from the data, so a 1990s store history and a warehouse still growing
-- both fall inside (a relationship test of every fact's local date checks it).
with

partition_bounds as (
    {%- for channel in ['store', 'web', 'call_center', 'social', 'customers'] %}
    select min(_partition_date) as first_day, max(_partition_date) as last_day from {{ source('raw', channel) }}
    {{ 'union all' if not loop.last }}
    {%- endfor %}
),

bounds as (
    select
        cast({{ dbt.date_trunc('year', 'coalesce(min(first_day), current_date)') }} as date) as first_day,
        cast({{ dbt.dateadd('day', -1, dbt.dateadd('year', 1, dbt.date_trunc('year', dbt.dateadd('day', var('date_spine_horizon_days'), 'coalesce(max(last_day), current_date)')))) }} as date) as last_day
    from partition_bounds
),

spine as (
    {{ days_between('bounds.first_day', 'bounds.last_day', 'bounds') }}
),

final as (
    select
        cast(date_day as date) as date_day,
        cast(extract(year from date_day) as integer) as year_number,
        cast(extract(quarter from date_day) as integer) as quarter_number,
        cast(extract(month from date_day) as integer) as month_number,
        cast({{ dbt.date_trunc('month', 'date_day') }} as date) as month_start_date,
        concat(
            cast(extract(year from date_day) as {{ dbt.type_string() }}), '-',
            {{ dbt.right("concat('0', cast(extract(month from date_day) as " ~ dbt.type_string() ~ "))", 2) }}
        ) as year_month,
        cast({{ dbt.date_trunc('week', 'date_day') }} as date) as week_start_date,
        {{ day_of_week_iso('date_day') }} as day_of_week,
        {{ day_of_week_iso('date_day') }} in (6, 7) as is_weekend
    from spine
)

select * from final
