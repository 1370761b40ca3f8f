-- Every web event with its session: a cookie's new session starts after 30 minutes without an
-- event (var web_session_timeout_minutes). The session id is the cookie plus the session's first
-- event, so it does not change when later events arrive.
-- Incremental by cookie, not a view: its tests and fct_web_sessions each recomputed the windows
-- over every web event.
-- Sessions depend only on the cookie's own events, so a run re-sessionizes the whole history of
-- the cookies with rows loaded since the last run, and of the cookies with events on the dates
-- those rows fall on (a re-delivered day that no longer holds a cookie's event drops it). A cookie
-- with no event left comes back as a row without an event, which replaces its old rows and which
-- the post-hook deletes.
-- On Spark (no delete by key without Delta or Iceberg) a table, rebuilt each run.
{{ config(materialized=('incremental' if target.type == 'duckdb' else 'table'), incremental_strategy='delete+insert',
          unique_key='cookie_id', on_schema_change='fail',
          post_hook="{% if is_incremental() %}delete from {{ this }} where web_event_id is null{% endif %}") }}
with

{% if is_incremental() %}
loaded as (
    select cookie_id, event_local_date from {{ ref('stg_web__events') }}
    where source_loaded_at > (
        select coalesce(max(built.source_loaded_at), cast('1900-01-01' as timestamp)) from {{ this }} as built
    )
),

touched_cookies as (
    select cookie_id from loaded
    union
    select previous.cookie_id from {{ this }} as previous
    where previous.event_local_date in (select event_local_date from loaded)
),
{% endif %}

events as (
    select * from {{ ref('stg_web__events') }}
    {% if is_incremental() %}
    where cookie_id in (select cookie_id from touched_cookies)
    {% endif %}
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

-- A session is named after its first event: the latest session start up to each event, in the
-- gaps' window order. (A third window, per session, sorted every event once more.)
named as (
    select
        *,
        {{ last_non_null("case when is_session_start = 1 then web_event_id end") }} over (
            partition by cookie_id order by event_at asc nulls last, web_event_id asc rows between unbounded preceding and current row
        ) as session_first_event_id
    from starts
),

final as (
    select
        concat(cookie_id, ':', session_first_event_id) as web_session_id,
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
    from named
)

select * from final
{% if is_incremental() %}
union all by name
select touched_cookies.cookie_id from touched_cookies
where not exists (select 1 from events where events.cookie_id = touched_cookies.cookie_id)
{% endif %}
