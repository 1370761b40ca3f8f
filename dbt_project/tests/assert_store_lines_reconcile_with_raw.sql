-- Every loaded, non-quarantined store line is in fct_order_lines exactly once, with the same revenue.
-- A daily run compares the dates it rebuilt (macros/scoped_tests.sql); the full-test day, every date.
{{ config(meta={'dagster': {'ref': {'name': 'fct_order_lines'}}, 'scoped_by_loads_of': 'fct_order_lines'}) }}  -- shown as an asset check of fct_order_lines
{%- set dates = dates_loaded_since_tested(ref('fct_order_lines'), 'ordered_local_date') %}
with

raw_lines as (
    select count(*) as lines, sum(quantity * unit_price) as revenue
    from {{ source('raw', 'store') }}
    {%- if dates is not none %}
    where _partition_date in ({{ dates }})
    {%- endif %}
),

mart_lines as (
    select count(*) as lines, count(distinct order_line_id) as distinct_lines, sum(quantity * unit_price) as revenue
    from {{ ref('fct_order_lines') }}
    where channel = 'store'
    {%- if dates is not none %}
      and ordered_local_date in ({{ dates }})
    {%- endif %}
)

select raw_lines.*, mart_lines.*
from raw_lines cross join mart_lines
where raw_lines.lines <> mart_lines.lines
   or mart_lines.distinct_lines <> mart_lines.lines
   or coalesce(raw_lines.revenue, 0) <> coalesce(mart_lines.revenue, 0)
