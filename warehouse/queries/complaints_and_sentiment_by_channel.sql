-- Interactions, complaint rate, satisfaction and social sentiment per channel and month.
select
    d.year_month,
    i.channel,
    count(*) as interactions,
    round(100 * avg(case when i.is_complaint then 1 else 0 end), 1) as complaint_pct,
    round(avg(i.csat), 2) as avg_csat,
    round(avg(i.sentiment_score), 3) as avg_sentiment
from marts.fct_interactions as i
inner join marts.dim_date as d on d.date_day = i.occurred_local_date
group by d.year_month, i.channel
order by d.year_month, i.channel;
