-- Every distinct purchase event loaded from the web is one line of fct_order_lines, with the same revenue.
-- A daily run compares the dates it rebuilt (macros/scoped_tests.sql); the full-test day, every date.
{{ config(meta={'dagster': {'ref': {'name': 'fct_order_lines'}}, 'scoped_by_loads_of': 'fct_order_lines'}) }}  -- shown as an asset check of fct_order_lines
{%- set dates = dates_loaded_since_tested(ref('fct_order_lines'), 'ordered_local_date') %}
with

raw_purchases as (
    select count(*) as lines, sum(quantity * unit_price) as revenue
    from (
        select _source, event_id, min(quantity) as quantity, min(unit_price) as unit_price
        from {{ source('raw', 'web') }}
        where lower(trim(event_type)) = 'purchase' and order_id is not null
        {%- if dates is not none %}
          and _partition_date in ({{ dates }})
        {%- endif %}
        group by _source, event_id
    ) as purchases
),

mart_lines as (
    select count(*) as lines, sum(quantity * unit_price) as revenue
    from {{ ref('fct_order_lines') }}
    where channel = 'web'
    {%- if dates is not none %}
      and ordered_local_date in ({{ dates }})
    {%- endif %}
)

select raw_purchases.*, mart_lines.*
from raw_purchases cross join mart_lines
where raw_purchases.lines <> mart_lines.lines
   or coalesce(raw_purchases.revenue, 0) <> coalesce(mart_lines.revenue, 0)
