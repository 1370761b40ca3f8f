-- Active customers by current region and churn risk band, with the mean churn probability.
with latest as (
    select * from ml.churn_scores
    where as_of_date = (select max(as_of_date) from ml.churn_scores)
)
select
    c.region,
    s.risk_band,
    count(*) as customers,
    round(avg(s.churn_probability), 3) as avg_churn_probability
from latest as s
inner join marts.dim_customer as c on c.customer_key = s.customer_key and c.is_current
group by c.region, s.risk_band
order by c.region, s.risk_band;
