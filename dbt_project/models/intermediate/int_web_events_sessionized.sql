-- Every web event with its session: a cookie's new session starts after 30 minutes without an
-- event (var web_session_timeout_minutes). The session id is the cookie plus the session's first
-- event, so it does not change when later events arrive.
with

events as (
    select * from {{ ref('stg_web__events') }}
),

gaps as (
    select
        *,
        lag(event_at) over (partition by cookie_id order by event_at asc nulls last, web_event_id asc) as previous_event_at
    from events
),

starts as (
    select
        *,
        case
            when previous_event_at is null then 1
            when {{ dbt.datediff('previous_event_at', 'event_at', 'second') }} > {{ var('web_session_timeout_minutes') }} * 60 then 1
            else 0
        end as is_session_start
    from gaps
),

numbered as (
    select
        *,
        sum(is_session_start) over (
            partition by cookie_id order by event_at asc nulls last, web_event_id asc rows between unbounded preceding and current row
        ) as session_number
    from starts
),

final as (
    select
        concat(cookie_id, ':', first_value(web_event_id) over (
            partition by cookie_id, session_number order by event_at asc nulls last, web_event_id asc
            rows between unbounded preceding and unbounded following
        )) as web_session_id,
        web_event_id,
        source_name,
        event_id,
        event_at,
        event_date,
        event_local_date,
        event_type,
        cookie_id,
        customer_ref,
        page_url,
        sku,
        quantity,
        unit_price,
        currency,
        order_id,
        search_query,
        utm_source,
        utm_medium,
        utm_campaign,
        user_agent,
        cast(is_session_start = 1 as boolean) as is_session_start,
        source_loaded_at
    from numbered
)

select * from final
