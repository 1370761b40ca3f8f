-- One row per web session (30 minutes of inactivity end one). Sessions before a cookie's first
-- login belong to the customer too: the cookie's customer key comes from the identity map.
-- Incremental by the session's local start date (see macros/incremental.sql). An incremental run
-- sums only the sessions starting on a rebuilt date: summing every session was most of its time.
{{ config(**increments_by_day('session_local_date')) }}

with

-- `not materialized`: read twice (session starts, session totals), and DuckDB would otherwise copy
-- every web event with every column for them.
events as {{ inlined() }} (
    select * from {{ ref('int_web_events_sessionized') }}
),

identity as (
    select * from {{ ref('customer_identity_map') }}
),

firsts as {{ inlined() }} (
    select
        web_session_id,
        event_date as session_date,
        event_local_date as session_local_date,
        page_url as landing_page_url,
        utm_source,
        utm_medium,
        utm_campaign,
        user_agent
    from events
    where is_session_start
),

{% if is_incremental() %}
-- The start date of each session, with each of its events' load time: the dates loaded since.
session_loads as {{ inlined() }} (
    select firsts.session_local_date, events.source_loaded_at
    from events
    inner join firsts on events.web_session_id = firsts.web_session_id
),

rebuilt_sessions as (
    select web_session_id from firsts
    where session_local_date in ({{ rebuilt_dates('session_local_date', 'session_loads', 'identity', spill_days=1) }})
),
{% endif %}

sessions as (
    select
        web_session_id,
        min(cookie_id) as cookie_id,
        min(event_at) as session_started_at,
        max(event_at) as session_ended_at,
        cast(count(*) as bigint) as events,
        cast(sum(case when event_type = 'page_view' then 1 else 0 end) as bigint) as page_views,
        cast(sum(case when event_type = 'product_view' then 1 else 0 end) as bigint) as product_views,
        cast(sum(case when event_type = 'search' then 1 else 0 end) as bigint) as searches,
        cast(sum(case when event_type = 'add_to_cart' then 1 else 0 end) as bigint) as add_to_carts,
        cast(sum(case when event_type = 'checkout' then 1 else 0 end) as bigint) as checkouts,
        cast(sum(case when event_type = 'purchase' then 1 else 0 end) as bigint) as purchase_lines,
        cast(count(distinct case when event_type = 'purchase' then order_id end) as bigint) as orders,
        cast(coalesce(sum(case when event_type = 'purchase' then quantity * unit_price end), 0) as decimal(18, 4)) as revenue,
        cast(max(case when event_type = 'login' or customer_ref is not null then 1 else 0 end) = 1 as boolean) as has_login,
        max(source_loaded_at) as source_loaded_at
    from events
    {% if is_incremental() -%}
    {{ semi_join() }} rebuilt_sessions on events.web_session_id = rebuilt_sessions.web_session_id
    {% endif -%}
    group by web_session_id
),

joined as (
    select
        sessions.web_session_id,
        sessions.cookie_id,
        firsts.session_date,
        firsts.session_local_date,
        sessions.session_started_at,
        sessions.session_ended_at,
        cast({{ dbt.datediff('sessions.session_started_at', 'sessions.session_ended_at', 'second') }} as bigint) as duration_seconds,
        sessions.events,
        sessions.page_views,
        sessions.product_views,
        sessions.searches,
        sessions.add_to_carts,
        sessions.checkouts,
        sessions.purchase_lines,
        sessions.orders,
        sessions.revenue,
        sessions.has_login,
        sessions.add_to_carts > 0 and sessions.orders = 0 as is_cart_abandoned,
        firsts.landing_page_url,
        firsts.utm_source,
        firsts.utm_medium,
        firsts.utm_campaign,
        firsts.user_agent,
        concat('web_cookie:', sessions.cookie_id) as identity_record_key,
        sessions.source_loaded_at
    from sessions
    inner join firsts on sessions.web_session_id = firsts.web_session_id
),

final as (
    select
        joined.*,
        identity.customer_key
    from joined
    left join identity on joined.identity_record_key = identity.record_key
    {{ incremental_dates_filter('session_local_date', 'session_loads', 'identity', spill_days=1) }}
)

select * from final
