-- Every web event is in exactly one session; every session, call and social interaction is one interaction.
{{ config(meta={'dagster': {'ref': {'name': 'fct_interactions'}}}) }}  -- shown as an asset check of fct_interactions
with

events as (
    select count(*) as events from {{ ref('stg_web__events') }}
),

sessions as (
    select count(*) as sessions, coalesce(sum(events), 0) as events from {{ ref('fct_web_sessions') }}
),

calls as (
    select count(*) as calls from {{ ref('stg_call_center__calls') }}
),

social as (
    select count(*) as social from {{ ref('stg_social__interactions') }}
),

interactions as (
    select
        sum(case when channel = 'web' then 1 else 0 end) as sessions,
        sum(case when channel = 'call_center' then 1 else 0 end) as calls,
        sum(case when channel = 'social' then 1 else 0 end) as social
    from {{ ref('fct_interactions') }}
)

select events.*, sessions.*, calls.*, social.*, interactions.*
from events
cross join sessions
cross join calls
cross join social
cross join interactions
where events.events <> sessions.events
   or sessions.sessions <> coalesce(interactions.sessions, 0)
   or calls.calls <> coalesce(interactions.calls, 0)
   or social.social <> coalesce(interactions.social, 0)
