-- Every source record that belongs to a known customer, with its customer key and the rule that
-- matched it: the identifier types it shares with the customer's other records, and the guarded
-- contact types it carries that were not used (int_identifier_quality).
-- Incremental on DuckDB: rebuilds the records the keys step marked stale (macros/incremental.sql).
{{ config(**identity_map_config()) }}

with

all_identifiers as (
    select * from {{ ref('int_identifiers_collected') }}
),

-- The records rebuilt, with their identifiers.
identifiers as (
    select * from all_identifiers
    {%- if identity_map_scoped() %}
    where (record_type, record_id) in (select record_type, record_id from {{ stale_identity_records() }})
    {%- endif %}
),

keys as (
    select * from {{ source('identity', 'int_customer_keys_assigned') }}
),

quality as (
    select * from {{ ref('int_identifier_quality') }}
),

guarded as (
    select
        i.record_type,
        i.record_id,
        {{ joined_distinct("i.identifier_type", "'+'") }} as guarded_types
    from identifiers as i
    inner join quality as q
        on i.identifier_type = q.identifier_type and i.identifier_value = q.identifier_value
    group by i.record_type, i.record_id
),

-- The records holding each identifier: count(*), since int_identifiers_collected holds each
-- (record, identifier) once, as its unique_combination test checks.
shared as (
    select identifier_type, identifier_value, count(*) as records
    from all_identifiers
    {%- if identity_map_scoped() %}
    where (identifier_type, identifier_value) in (select identifier_type, identifier_value from identifiers)
    {%- endif %}
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

matched as (
    select
        record_type,
        record_id,
        min(customer_key) as customer_key,
        coalesce(
            {{ joined_distinct("case when is_shared then identifier_type end", "'+'") }},
            'only record'
        ) as linked_by
    from record_identifiers
    group by record_type, record_id
),

final as (
    select
        concat(m.record_type, ':', m.record_id) as record_key,
        m.record_type,
        m.record_id,
        m.customer_key,
        case when g.guarded_types is null then m.linked_by
             else concat(m.linked_by, ' (guarded ', g.guarded_types, ' not used)') end as matched_by
    from matched as m
    left join guarded as g
        on m.record_type = g.record_type and m.record_id = g.record_id
)

select * from final
