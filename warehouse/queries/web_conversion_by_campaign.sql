-- Web sessions, conversion and cart abandonment by campaign source.
select
    coalesce(utm_source, '(direct)') as utm_source,
    count(*) as sessions,
    sum(orders) as orders,
    round(100 * avg(case when orders > 0 then 1 else 0 end), 2) as conversion_pct,
    round(100 * avg(case when is_cart_abandoned then 1 else 0 end), 2) as cart_abandoned_pct,
    sum(revenue) as revenue
from marts.fct_web_sessions
group by all
order by sessions desc;
