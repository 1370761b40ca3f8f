-- One row per campaign and customer: the arm, and what the customer bought within the response
-- window. A customer listed in several arms of one campaign (two lists merged, two registrations)
-- is kept once and flagged: no arm can claim their orders. Contacts that name no known customer
-- are kept one row each, without a customer, so a campaign's losses are counted, not hidden.
-- Incremental on DuckDB (macros/campaign_contacts.sql): a daily run builds again the customers
-- noted as changed and the contacts without a customer; a table on Spark.
{{ config(**campaign_contacts_config()) }}

with

contacts as (
    select * from {{ ref('int_campaign_contacts_resolved') }}
    {%- if is_incremental() %}
    where customer_key is null or {{ in_campaign_contacts_scope('customer_key') }}
    {%- endif %}
),

orders as (
    select customer_key, ordered_at, net_amount from {{ ref('fct_orders') }}
    where customer_key is not null
    {%- if is_incremental() %}
      and {{ in_campaign_contacts_scope('customer_key') }}
    {%- endif %}
),

matched as (
    select
        campaign_id,
        customer_key,
        min(source_name) as source_name,
        min(campaign_name) as campaign_name,
        case when count(distinct arm) = 1 then min(arm) end as arm,
        case when count(distinct arm) = 1 then min(offer) end as offer,
        cast(count(distinct arm) > 1 as boolean) as is_in_several_arms,
        cast(max(case when is_control then 1 else 0 end) = 1 as boolean) as is_control,
        cast(min(case when is_randomized then 1 else 0 end) = 1 as boolean) as is_randomized,
        min(response_window_days) as response_window_days,
        min(assigned_at) as assigned_at,
        min(contact_channel) as contact_channel,
        cast(sum(offer_cost) as decimal(18, 4)) as offer_cost,
        cast(count(*) as bigint) as contact_records,
        cast('matched' as {{ dbt.type_string() }}) as resolution
    from contacts
    where customer_key is not null
    group by campaign_id, customer_key
),

unmatched as (
    select
        campaign_id,
        cast(null as {{ dbt.type_string() }}) as customer_key,
        source_name,
        campaign_name,
        arm,
        offer,
        cast(false as boolean) as is_in_several_arms,
        is_control,
        is_randomized,
        response_window_days,
        assigned_at,
        contact_channel,
        offer_cost,
        cast(1 as bigint) as contact_records,
        resolution,
        campaign_contact_id
    from contacts
    where customer_key is null
),

campaign_customers as (
    select *, cast(null as {{ dbt.type_string() }}) as campaign_contact_id from matched
    union all
    select * from unmatched
),

windows as (
    select
        *,
        {{ dbt.dateadd('day', 'response_window_days', 'assigned_at') }} as window_ends_at
    from campaign_customers
),

responses as (
    select
        w.campaign_id,
        w.customer_key,
        cast(count(case when o.net_amount > 0 then 1 end) as bigint) as orders,
        cast(coalesce(sum(o.net_amount), 0) as decimal(18, 4)) as net_revenue
    from windows as w
    inner join orders as o
        on w.customer_key = o.customer_key
        and w.assigned_at <= o.ordered_at
        and w.window_ends_at > o.ordered_at
    group by w.campaign_id, w.customer_key
),

final as (
    select
        -- hashed for a contact without a customer: its id may be a member id or phone in clear
        concat(w.campaign_id, ':', coalesce(w.customer_key, {{ dbt.hash('w.campaign_contact_id') }})) as campaign_contact_key,
        w.campaign_id,
        w.campaign_name,
        w.source_name,
        w.customer_key,
        w.arm,
        w.offer,
        w.is_control,
        w.is_randomized,
        w.assigned_at,
        w.response_window_days,
        w.window_ends_at,
        w.contact_channel,
        w.offer_cost,
        w.contact_records,
        w.is_in_several_arms,
        w.resolution,
        case
            when w.customer_key is null then w.resolution
            when w.is_in_several_arms then 'in several arms'
        end as excluded_because,
        coalesce(r.orders, 0) as orders,
        cast(coalesce(r.orders, 0) > 0 as boolean) as converted,
        cast(coalesce(r.net_revenue, 0) as decimal(18, 4)) as net_revenue
    from windows as w
    left join responses as r
        on w.campaign_id = r.campaign_id and w.customer_key = r.customer_key
)

select * from final
