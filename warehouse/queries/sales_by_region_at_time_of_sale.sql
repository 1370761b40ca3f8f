-- Revenue by the region the customer lived in when they bought (a point-in-time SCD2 join).
select
    coalesce(c.region, 'unknown') as region,
    sum(l.net_amount) as net_revenue,
    count(distinct l.order_key) as orders
from marts.fct_order_lines as l
left join marts.dim_customer as c
    on l.customer_key = c.customer_key
   and l.ordered_at >= c.valid_from
   and (l.ordered_at < c.valid_to or c.valid_to is null)
group by coalesce(c.region, 'unknown')
order by net_revenue desc;
