-- One row per payment or refund: what each order took or gave back, by method. Receipts carry one
-- payment method; web purchase events carry none, so the web shop's payments are 'online'.
-- Incremental like the orders it comes from (macros/engines.sql: increments_by_key).
{{ config(**increments_by_key('payment_id', 'fct_orders', 'order_key')) }}
-- depends_on: {{ ref('customer_identity_map') }} (rekey_rows)

with

orders as (
    select * from {{ ref('fct_orders') }}
    {{ keys_loaded_since('order_key', ref('fct_orders')) }}
),

final as (
    select
        concat(order_key, ':payment') as payment_id,
        order_key,
        identity_record_key,
        customer_key,
        channel,
        store_id,
        ordered_at as paid_at,
        ordered_date as paid_date,
        coalesce(payment_method, case when channel = 'web' then 'online' else 'unknown' end) as payment_method,
        net_amount as amount,
        currency,
        is_refund,
        source_loaded_at
    from orders
)

select * from final
