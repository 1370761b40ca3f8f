-- Every loaded, non-quarantined store line is in fct_order_lines exactly once, with the same revenue.
{{ config(meta={'dagster': {'ref': {'name': 'fct_order_lines'}}}) }}  -- shown as an asset check of fct_order_lines
with

raw_lines as (
    select count(*) as lines, sum(quantity * unit_price) as revenue from {{ source('raw', 'store') }}
),

mart_lines as (
    select count(*) as lines, count(distinct order_line_id) as distinct_lines, sum(quantity * unit_price) as revenue
    from {{ ref('fct_order_lines') }}
    where channel = 'store'
)

select raw_lines.*, mart_lines.*
from raw_lines cross join mart_lines
where raw_lines.lines <> mart_lines.lines
   or mart_lines.distinct_lines <> mart_lines.lines
   or coalesce(raw_lines.revenue, 0) <> coalesce(mart_lines.revenue, 0)
