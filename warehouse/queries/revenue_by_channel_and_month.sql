-- Net revenue, orders and customers by sales channel and month (local dates).
select
    d.year_month,
    o.channel,
    sum(o.net_amount) as net_revenue,
    count(*) as orders,
    count(distinct o.customer_key) as customers
from marts.fct_orders as o
inner join marts.dim_date as d on o.ordered_local_date = d.date_day
group by d.year_month, o.channel
order by d.year_month, o.channel;
