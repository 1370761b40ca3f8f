-- Each campaign contact with the customer its identifiers name. Looked up in the identity graph,
-- never added to it: a campaign list says whom a tool targeted, not who somebody is.
-- A table, not a view: its four tests and fct_campaign_contacts each resolved every contact again.
-- Incremental on DuckDB (macros/campaign_contacts.sql): a daily run resolves again the contacts
-- loaded since, those resolved to a customer noted as changed, those holding a value such a
-- customer now holds, those naming several customers (one of them may have changed) and those
-- holding a guarded value (the records holding it may all have gone); a table on Spark.
{{ config(**campaign_contacts_resolved_config()) }}
-- depends_on: {{ ref('customer_identity_map') }} (the customers it notes)
{%- set scoped = changed_customers_scoped() %}

with

{% if scoped -%}
changed as (
    select customer_key from main.dbt_changed_customers
),

changed_values as (
    select identifier_type, identifier_value from {{ source('identity', 'int_customer_keys_assigned') }}
    where customer_key in (select customer_key from changed)
),

resolved_before as (
    select campaign_contact_id from {{ this }}
    where customer_key in (select customer_key from changed)
       or resolution in ('identifiers name different customers', 'shared contact value')
),

{% endif -%}
contacts as (
    select * from {{ ref('stg_campaigns__contacts') }}
    {%- if scoped %}
    where source_loaded_at > (
            select coalesce(max(source_loaded_at), cast('1900-01-01' as timestamp)) from {{ this }}
        )
       or campaign_contact_id in (select campaign_contact_id from resolved_before)
       or customer_ref in (select identifier_value from changed_values where identifier_type = 'customer_ref')
       or loyalty_card in (select identifier_value from changed_values where identifier_type = 'loyalty_card')
       or email in (select identifier_value from changed_values where identifier_type = 'email')
       or phone_e164 in (select identifier_value from changed_values where identifier_type = 'phone')
    {%- endif %}
),

keys as (
    select identifier_type, identifier_value, customer_key from {{ source('identity', 'int_customer_keys_assigned') }}
),

guarded as (
    select identifier_type, identifier_value from {{ ref('int_identifier_quality') }}
),

named as (
    select campaign_contact_id, 'customer_ref' as identifier_type, customer_ref as identifier_value from contacts
    union all
    select campaign_contact_id, 'loyalty_card', loyalty_card from contacts
    union all
    select campaign_contact_id, 'email', email from contacts
    union all
    select campaign_contact_id, 'phone', phone_e164 from contacts
),

found as (
    select
        n.campaign_contact_id,
        count(distinct k.customer_key) as customers_found,
        min(k.customer_key) as customer_key,
        max(case when g.identifier_value is not null then 1 else 0 end) = 1 as has_guarded_value
    from named as n
    left join keys as k
        on n.identifier_type = k.identifier_type and n.identifier_value = k.identifier_value
    left join guarded as g
        on n.identifier_type = g.identifier_type and n.identifier_value = g.identifier_value
    where n.identifier_value is not null
    group by n.campaign_contact_id
),

final as (
    select
        c.campaign_contact_id,
        c.source_name,
        c.campaign_id,
        c.contact_id,
        c.arm,
        c.is_control,
        c.is_randomized,
        c.response_window_days,
        c.assigned_at,
        c.contact_channel,
        c.offer_cost,
        c.campaign_name,
        c.offer,
        case when f.customers_found = 1 then f.customer_key end as customer_key,
        case
            when f.campaign_contact_id is null then 'no identifier'
            when f.customers_found = 1 then 'matched'
            when f.customers_found > 1 then 'identifiers name different customers'
            when f.has_guarded_value then 'shared contact value'
            else 'unknown customer'
        end as resolution,
        c.source_loaded_at
    from contacts as c
    left join found as f
        on c.campaign_contact_id = f.campaign_contact_id
)

select * from final
