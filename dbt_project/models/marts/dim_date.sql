-- One row per calendar day from var date_spine_start to date_spine_end (dates of every fact fall
-- inside; a test checks it).
with

spine as (
    {{ dbt.date_spine('day', "cast('" ~ var('date_spine_start') ~ "' as date)", "cast('" ~ var('date_spine_end') ~ "' as date)") }}
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
