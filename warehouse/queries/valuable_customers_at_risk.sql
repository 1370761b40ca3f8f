-- Whom to win back first: high predicted value, high churn risk, and consent to be contacted.
with value as (
    select * from ml.customer_value where as_of_date = (select max(as_of_date) from ml.customer_value)
),
churn as (
    select * from ml.churn_scores where as_of_date = (select max(as_of_date) from ml.churn_scores)
)
select
    c.customer_key,
    c.region,
    c.tier,
    round(v.predicted_value, 2) as predicted_value,
    round(ch.churn_probability, 3) as churn_probability,
    ch.top_features
from value as v
inner join churn as ch on ch.customer_key = v.customer_key
inner join marts.dim_customer as c on c.customer_key = v.customer_key and c.is_current
where ch.risk_band = 'high' and c.has_marketing_consent
order by v.predicted_value * ch.churn_probability desc
limit 50;
