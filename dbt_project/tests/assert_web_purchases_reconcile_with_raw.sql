-- Every distinct purchase event loaded from the web is one line of fct_order_lines.
{{ config(meta={'dagster': {'ref': {'name': 'fct_order_lines'}}}) }}  -- shown as an asset check of fct_order_lines
with

raw_purchases as (
    select count(distinct concat(_source, ':', event_id)) as lines
    from {{ source('raw', 'web') }}
    where lower(trim(event_type)) = 'purchase' and order_id is not null
),

mart_lines as (
    select count(*) as lines from {{ ref('fct_order_lines') }} where channel = 'web'
)

select * from raw_purchases cross join mart_lines where raw_purchases.lines <> mart_lines.lines
