-- Orders and payments carry exactly the lines' revenue: every order of the lines once, same net amount.
{{ config(meta={'dagster': {'ref': {'name': 'fct_payments'}}}) }}  -- shown as an asset check of fct_payments
with

lines as (
    select count(distinct order_key) as orders, sum(net_amount) as net_amount from {{ ref('fct_order_lines') }}
),

orders as (
    select count(*) as orders, sum(net_amount) as net_amount from {{ ref('fct_orders') }}
),

payments as (
    select count(*) as payments, sum(amount) as amount from {{ ref('fct_payments') }}
)

select lines.*, orders.*, payments.*
from lines cross join orders cross join payments
where lines.orders <> orders.orders
   or orders.orders <> payments.payments
   or coalesce(lines.net_amount, 0) <> coalesce(orders.net_amount, 0)
   or coalesce(orders.net_amount, 0) <> coalesce(payments.amount, 0)
