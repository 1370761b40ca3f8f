-- customer_360 holds every known customer's revenue and orders, as fct_orders sums them.
{{ config(meta={'dagster': {'ref': {'name': 'customer_360'}}}) }}  -- shown as an asset check of customer_360
with

orders as (
    select
        sum(net_amount) as net_revenue,
        count(distinct case when net_amount > 0 then order_key end) as orders
    from {{ ref('fct_orders') }}
    where customer_key is not null
),

customers as (
    select sum(net_revenue) as net_revenue, sum(orders) as orders from {{ ref('customer_360') }}
)

select orders.*, customers.*
from orders cross join customers
where coalesce(orders.net_revenue, 0) <> coalesce(customers.net_revenue, 0)
   or coalesce(orders.orders, 0) <> coalesce(customers.orders, 0)
