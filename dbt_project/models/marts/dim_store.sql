-- One row per store seen on a receipt.
with

lines as (
    select * from {{ ref('stg_store__order_lines') }}
),

final as (
    select
        store_id,
        min(ordered_local_date) as first_sale_date,
        max(ordered_local_date) as last_sale_date,
        cast(count(distinct order_id) as bigint) as receipts
    from lines
    where store_id is not null
    group by store_id
)

select * from final
