-- One row per customer: purchases, revenue, channels, last touch, complaints, CSAT and consent,
-- with the current registry attributes.
-- The imports are `not materialized`: each is read more than once, and DuckDB would otherwise copy
-- the whole table, every column, for its readers.
-- Incremental on DuckDB by customer: rebuilds the customers whose facts, identity or profile
-- changed (noted by the daily facts, the identity map and dim_customer,
-- macros/changed_customers.sql); a table on Spark, rebuilt each run.
{{ config(**customer_360_config()) }}
-- depends_on: {{ ref('fct_campaign_contacts') }} (reads the list of changed customers before it is emptied)
{%- set scoped = changed_customers_scoped() %}

with

current_customers as {{ inlined() }} (
    select * from {{ ref('dim_customer') }}
    where is_current
),

{% if scoped -%}
rebuilt as (
    select customer_key from main.dbt_changed_customers
),

{% endif -%}
customers as {{ inlined() }} (
    select * from current_customers
    {%- if scoped %}
    where customer_key in (select customer_key from rebuilt)
    {%- endif %}
),

orders as {{ inlined() }} (
    select * from {{ ref('fct_orders') }}
    {%- if scoped %}
    where customer_key in (select customer_key from rebuilt)
    {%- endif %}
),

interactions as {{ inlined() }} (
    select * from {{ ref('fct_interactions') }}
    {%- if scoped %}
    where customer_key in (select customer_key from rebuilt)
    {%- endif %}
),

purchases as (
    select
        customer_key,
        min(case when net_amount > 0 then ordered_at end) as first_purchase_at,
        max(case when net_amount > 0 then ordered_at end) as last_purchase_at,
        cast(count(distinct case when net_amount > 0 then order_key end) as bigint) as orders,
        cast(count(distinct case when is_refund then order_key end) as bigint) as refunds,
        cast(sum(net_amount) as decimal(18, 4)) as net_revenue,
        cast(count(distinct case when net_amount > 0 and channel = 'store' then order_key end) as bigint) as store_orders,
        cast(count(distinct case when net_amount > 0 and channel = 'web' then order_key end) as bigint) as web_orders
    from orders
    where customer_key is not null
    group by customer_key
),

touches as (
    select
        customer_key,
        max(occurred_at) as last_interaction_at,
        cast(sum(case when channel = 'web' then 1 else 0 end) as bigint) as web_sessions,
        cast(sum(case when channel = 'call_center' then 1 else 0 end) as bigint) as calls,
        cast(sum(case when channel = 'social' then 1 else 0 end) as bigint) as social_interactions,
        cast(sum(case when is_complaint then 1 else 0 end) as bigint) as complaints,
        cast(avg(cast(csat as decimal(9, 4))) as decimal(9, 4)) as avg_csat,
        cast(avg(cast(sentiment_score as decimal(9, 4))) as decimal(9, 4)) as avg_social_sentiment
    from interactions
    where customer_key is not null
    group by customer_key
),

last_touch as (
    select customer_key, channel as last_interaction_channel
    from (
        select
            customer_key,
            channel,
            row_number() over (partition by customer_key order by occurred_at desc nulls last, interaction_id desc) as recency_rank
        from interactions
        where customer_key is not null
    ) as ranked
    where recency_rank = 1
),

channels as (
    select
        customer_key,
        cast(count(distinct channel) as integer) as channel_count,
        {{ joined_distinct('channel', "'+'") }} as channels_used
    from (
        select customer_key, channel from orders where customer_key is not null
        union all
        select customer_key, channel from interactions where customer_key is not null
    ) as used
    group by customer_key
),

final as (
    select
        customers.customer_key,
        customers.customer_ref,
        customers.full_name,
        customers.region,
        customers.city,
        customers.tier,
        customers.signup_channel,
        customers.signup_date,
        customers.first_seen_at,
        customers.has_marketing_consent,
        purchases.first_purchase_at,
        purchases.last_purchase_at,
        coalesce(purchases.orders, 0) as orders,
        coalesce(purchases.store_orders, 0) as store_orders,
        coalesce(purchases.web_orders, 0) as web_orders,
        coalesce(purchases.refunds, 0) as refunds,
        coalesce(purchases.net_revenue, cast(0 as decimal(18, 4))) as net_revenue,
        coalesce(channels.channel_count, 0) as channel_count,
        channels.channels_used,
        touches.last_interaction_at,
        last_touch.last_interaction_channel,
        coalesce(touches.web_sessions, 0) as web_sessions,
        coalesce(touches.calls, 0) as calls,
        coalesce(touches.social_interactions, 0) as social_interactions,
        coalesce(touches.complaints, 0) as complaints,
        touches.avg_csat,
        touches.avg_social_sentiment
    from customers
    left join purchases on customers.customer_key = purchases.customer_key
    left join touches on customers.customer_key = touches.customer_key
    left join last_touch on customers.customer_key = last_touch.customer_key
    left join channels on customers.customer_key = channels.customer_key
)

select * from final
