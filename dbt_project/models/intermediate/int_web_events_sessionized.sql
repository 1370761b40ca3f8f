-- Every web event with its session: a cookie's new session starts after 30 minutes without an
-- event (var web_session_timeout_minutes). The session id is the cookie plus the session's first
-- event, so it does not change when later events arrive.
-- Incremental by cookie, not a view: its tests and fct_web_sessions each recomputed the windows
-- over every web event.
-- An event's session depends only on the events before it (in the order below), so a run redoes
-- each touched cookie from its earliest touched event on and keeps its earlier events as they
-- are: the cookies with events loaded since, those with events on the dates those fall on (a
-- re-delivered day that no longer holds a cookie's event drops it) and those of the earlier
-- versions of re-delivered events. The first redone event's gap is measured from the last kept
-- one, whose session it may continue. One row without an event per redone cookie tells the
-- strategy where to cut (macros/incremental.sql): a cookie's history is not rewritten each day.
-- On Spark (no delete by key without Delta or Iceberg) a table, rebuilt each run.
{{ config(materialized=('incremental' if target.type == 'duckdb' else 'table'), incremental_strategy='sessions_redone',
          on_schema_change='fail') }}
with

{% if is_incremental() %}
loaded as (
    select web_event_id, cookie_id, event_at, event_local_date from {{ ref('stg_web__events') }}
    where source_loaded_at > (
        select coalesce(max(built.source_loaded_at), cast('1900-01-01' as timestamp)) from {{ this }} as built
    )
),

touched as (
    select cookie_id, event_at from loaded
    union all
    select previous.cookie_id, previous.event_at from {{ this }} as previous
    where previous.event_local_date in (select event_local_date from loaded)
        or previous.web_event_id in (select web_event_id from loaded)
),

-- Each touched cookie's first redone time; NULL (no touched event has a time): its whole history.
redo as (
    select cookie_id, min(event_at) as redo_from
    from touched
    group by cookie_id
),
{% endif %}

events as (
    select staged.* from {{ ref('stg_web__events') }} as staged
    {% if is_incremental() %}
    {{ semi_join() }} redo
        on staged.cookie_id = redo.cookie_id
        and (redo.redo_from is null or staged.event_at is null or staged.event_at >= redo.redo_from)
    {% endif %}
),

{% if is_incremental() %}
-- The last event each redone cookie keeps, with its session.
kept as (
    select
        previous.cookie_id,
        max(previous.event_at) as event_at,
        {{ arg_max('previous.web_session_id', struct_of([['event_at', 'previous.event_at'], ['web_event_id', 'previous.web_event_id']])) }} as kept_session_id
    from {{ this }} as previous
    inner join redo on previous.cookie_id = redo.cookie_id
    where previous.event_at < redo.redo_from
    group by previous.cookie_id
),
{% endif %}

sequenced as (
    select
        *,
        cast(null as {{ dbt.type_string() }}) as kept_session_id
    from events
    {% if is_incremental() %}
    union all by name
    select cookie_id, event_at, kept_session_id from kept
    {% endif %}
),

gaps as (
    select
        *,
        lag(event_at) over (partition by cookie_id order by event_at asc nulls last, web_event_id asc) as previous_event_at
    from sequenced
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

-- A session is named after its first event: the latest session start up to each event (or the kept
-- session), in the gaps' window order. (A third window, per session, sorted every event once more.)
named as (
    select
        *,
        {{ last_non_null("coalesce(kept_session_id, case when is_session_start = 1 then concat(cookie_id, ':', web_event_id) end)") }} over (
            partition by cookie_id order by event_at asc nulls last, web_event_id asc rows between unbounded preceding and current row
        ) as web_session_id
    from starts
),

final as (
    select
        web_session_id,
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
    where kept_session_id is null
)

select * from final
{% if is_incremental() %}
union all by name
select cookie_id, redo_from as event_at from redo
{% endif %}
