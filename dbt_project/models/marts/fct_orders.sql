-- One row per order (store receipt or web order), summed from its lines. An order's lines can
-- arrive on several days (a late line; a return receipt is its own order): a run sums again, from
-- all their lines, the orders with a line loaded since or lost (macros/engines.sql: increments_by_key).
{{ config(**increments_by_key('order_key', 'fct_order_lines', 'order_key', notes_lost_keys=true)) }}
-- depends_on: {{ ref('customer_identity_map') }} (rekey_rows)

with

lines as (
    select * from {{ ref('fct_order_lines') }}
    {{ keys_loaded_since('order_key', ref('fct_order_lines')) }}
),

final as (
    select
        order_key,
        min(order_id) as order_id,
        min(channel) as channel,
        min(source_name) as source_name,
        min(ordered_at) as ordered_at,
        min(ordered_date) as ordered_date,
        min(ordered_local_date) as ordered_local_date,
        min(store_id) as store_id,
        min(identity_record_key) as identity_record_key,
        min(customer_key) as customer_key,
        min(currency) as currency,
        min(payment_method) as payment_method,
        cast(count(*) as bigint) as lines,
        cast(sum(quantity) as bigint) as units,
        cast(sum(quantity * unit_price) as decimal(18, 4)) as gross_amount,
        cast(sum(discount) as decimal(18, 4)) as discount_amount,
        cast(sum(net_amount) as decimal(18, 4)) as net_amount,
        cast(max(case when is_return then 1 else 0 end) = 1 as boolean) as has_returns,
        cast(sum(net_amount) < 0 as boolean) as is_refund,
        max(source_loaded_at) as source_loaded_at
    from lines
    group by order_key
)

select * from final
