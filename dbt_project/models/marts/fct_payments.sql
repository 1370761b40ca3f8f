-- One row per payment or refund: what each order took or gave back, by method. Receipts carry one
-- payment method; web purchase events carry none, so the web shop's payments are 'online'.
with

orders as (
    select * from {{ ref('fct_orders') }}
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
        is_refund
    from orders
)

select * from final
