-- What sells together: the strongest association rules with product names, latest mining date.
with latest as (
    select * from ml.association_rules
    where as_of_date = (select max(as_of_date) from ml.association_rules)
)
select
    r.antecedents,
    r.consequents,
    p.product_name as consequent_name,
    round(r.support, 4) as support,
    round(r.confidence, 3) as confidence,
    round(r.lift, 2) as lift
from latest as r
left join marts.dim_product as p on len(r.consequents) = 1 and p.sku = r.consequents[1]
order by r.lift desc, r.support desc
limit 20;
