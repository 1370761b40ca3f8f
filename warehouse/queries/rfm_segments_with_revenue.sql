-- Customers and revenue per RFM segment, as of the latest scoring date.
with latest as (
    select * from ml.rfm_segments
    where as_of_date = (select max(as_of_date) from ml.rfm_segments)
)
select
    segment,
    count(*) as customers,
    round(avg(recency_days), 1) as avg_recency_days,
    round(avg(frequency), 2) as avg_orders,
    sum(monetary) as revenue,
    round(100 * sum(monetary) / sum(sum(monetary)) over (), 1) as revenue_share_pct
from latest
group by segment
order by revenue desc;
