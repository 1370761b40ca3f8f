-- One row per SKU sold, with its most recent name and category, and whether it is a product at all.
-- Web SKUs come from the sessionized events, which hold every web event as the staging table does.
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

-- Each SKU's name and category from its latest named sighting (the latest sighting if never
-- named), as one aggregate per SKU: a window sorted every sighting (10 million at 1 million
-- customers) to keep one per SKU.
latest as (
    select
        sku,
        {{ arg_max(
            struct_of([['product_name', 'product_name'], ['category', 'category']]),
            struct_of([['is_named', 'product_name is not null'],
                       ['seen_at', "coalesce(seen_at, cast('0001-01-01' as timestamp))"],
                       ['tie_breaker', 'tie_breaker']])
        ) }} as sighting
    from skus
    group by sku
),

final as (
    select
        latest.sku,
        latest.sighting.product_name,
        latest.sighting.category,
        upper(latest.sku) in ({{ "'" ~ var('non_product_skus') | join("', '") ~ "'" }}) as is_non_product
    from latest
)

select * from final
