-- Every source record that belongs to a known customer, with its customer key and the rule that
-- matched it: the identifier types it shares with the customer's other records.
with

identifiers as (
    select * from {{ ref('int_identifiers_collected') }}
),

keys as (
    select * from {{ ref('int_customer_keys_assigned') }}
),

-- The records holding each identifier: count(*), since int_identifiers_collected holds each
-- (record, identifier) once, as its unique_combination test checks (a count of distinct record
-- keys built a string for every row: 0.37 against 0.27 s at 100,000 customers).
shared as (
    select identifier_type, identifier_value, count(*) as records
    from identifiers
    group by identifier_type, identifier_value
),

record_identifiers as (
    select
        i.record_type,
        i.record_id,
        i.identifier_type,
        k.customer_key,
        s.records > 1 as is_shared
    from identifiers as i
    inner join keys as k
        on i.identifier_type = k.identifier_type and i.identifier_value = k.identifier_value
    inner join shared as s
        on i.identifier_type = s.identifier_type and i.identifier_value = s.identifier_value
),

final as (
    select
        concat(record_type, ':', record_id) as record_key,
        record_type,
        record_id,
        min(customer_key) as customer_key,
        coalesce(
            {{ dbt.listagg("distinct case when is_shared then identifier_type end", "'+'", "order by case when is_shared then identifier_type end") }},
            'only record'
        ) as matched_by
    from record_identifiers
    group by record_type, record_id
)

select * from final
