-- The giant-customer alarm: no customer holds more records or more distinct registry names than
-- the identity_alarm_* vars allow. A new kind of placeholder that the guard (int_identifier_quality)
-- missed would glue strangers into one key: the build fails on the day it appears, listing the
-- customer and its most shared identifiers, and nothing is published. A daily run weighs only the
-- customers it changed (macro changed_customers_scope); a full refresh and the full-test day weigh all.
{{ config(meta={'dagster': {'ref': {'name': 'customer_identity_map'}}}, store_failures=true) }}
{%- set scope = changed_customers_scope() %}
with

identity_map as (
    select * from {{ ref('customer_identity_map') }}
    {%- if scope %}
    where customer_key in ({{ scope }})
    {%- endif %}
),

identifiers as (
    select * from {{ ref('int_identifiers_collected') }}
),

keys as (
    select * from {{ source('identity', 'int_customer_keys_assigned') }}
),

profiles as (
    select * from {{ ref('stg_customers__profiles') }}
),

sizes as (
    select
        m.customer_key,
        count(distinct m.record_key) as records,
        count(distinct lower(p.full_name)) as names
    from identity_map as m
    left join profiles as p
        on m.record_type = 'profile' and m.record_id = p.customer_ref
    group by m.customer_key
),

giants as (
    select *
    from sizes
    where records > {{ var('identity_alarm_max_records') }} or names > {{ var('identity_alarm_max_names') }}
),

-- The identifiers of each giant with the records that carry them: the likely culprits first.
shared_identifiers as (
    select k.customer_key, k.identifier_type, k.identifier_value, count(*) as records
    from keys as k
    inner join giants as g on k.customer_key = g.customer_key
    inner join identifiers as i
        on k.identifier_type = i.identifier_type and k.identifier_value = i.identifier_value
    where k.identifier_type in ('phone', 'email', 'loyalty_card', 'customer_ref')
    group by k.customer_key, k.identifier_type, k.identifier_value
    having count(*) > 1
),

final as (
    select
        g.customer_key,
        g.records,
        g.names,
        {{ dbt.listagg("concat(s.identifier_type, ' ', s.identifier_value, ' (', cast(s.records as " ~ dbt.type_string() ~ "), ' records)')", "'; '", "order by s.records desc") }} as identifiers
    from giants as g
    left join shared_identifiers as s on g.customer_key = s.customer_key
    group by g.customer_key, g.records, g.names
)

select * from final
