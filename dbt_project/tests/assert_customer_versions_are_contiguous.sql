-- Each customer's versions follow one another without gap or overlap, and exactly the last is current.
{{ config(meta={'dagster': {'ref': {'name': 'dim_customer'}}}) }}  -- shown as an asset check of dim_customer
with

versions as (
    select
        customer_key,
        version_number,
        valid_from,
        valid_to,
        is_current,
        lead(valid_from) over (partition by customer_key order by version_number asc) as next_valid_from,
        max(version_number) over (partition by customer_key) as last_version
    from {{ ref('dim_customer') }}
)

select *
from versions
where (valid_to is null) <> is_current
   or is_current <> (version_number = last_version)
   or (next_valid_from is not null and next_valid_from <> valid_to)
   or valid_to < valid_from
