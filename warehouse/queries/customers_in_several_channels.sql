-- Customers active (buying or in touch) in more than one channel, by channel combination.
select
    channels_used,
    count(*) as customers,
    sum(net_revenue) as net_revenue,
    avg(orders) as avg_orders
from marts.customer_360
where channel_count >= 2
group by channels_used
order by customers desc, channels_used;
