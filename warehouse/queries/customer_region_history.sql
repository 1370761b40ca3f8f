-- The history of a customer's region, tier and consent (SCD type 2). Here: every customer who
-- moved; put a customer_key in the where clause for one.
select
    customer_key,
    version_number,
    valid_from,
    valid_to,
    region,
    city,
    tier,
    has_marketing_consent,
    is_current
from marts.dim_customer
where customer_key in (
    select customer_key from marts.dim_customer group by customer_key having count(distinct region) > 1
)
order by customer_key, version_number;
