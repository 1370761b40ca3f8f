-- One row per SKU sold, with its most recent name and category, and whether it is a product at all.
-- Web SKUs come from the sessionized events (a table), not the staging view, which would
-- de-duplicate every web delivery ever loaded again.
with

lines as (
    select * from {{ ref('stg_store__order_lines') }}
),

web_events as (
    select * from {{ ref('int_web_events_sessionized') }}
),

skus as (
    select sku, product_name, category, ordered_at as seen_at, order_line_id as tie_breaker from lines where sku is not null
    union all
    select sku, cast(null as {{ dbt.type_string() }}), cast(null as {{ dbt.type_string() }}), event_at, web_event_id
    from web_events where sku is not null
),

ranked as (
    select
        *,
        row_number() over (
            partition by sku
            order by case when product_name is null then 1 else 0 end asc, seen_at desc nulls last, tie_breaker desc
        ) as name_rank
    from skus
),

final as (
    select
        sku,
        product_name,
        category,
        upper(sku) in ({{ "'" ~ var('non_product_skus') | join("', '") ~ "'" }}) as is_non_product
    from ranked
    where name_rank = 1
)

select * from final
