-- One row per touch across web (a session), call center (a call) and social media (an interaction),
-- with its type, outcome, and CSAT or sentiment where known. Incremental by local date (see
-- macros/incremental.sql).
{{ config(**increments_by_day('occurred_local_date')) }}

with

-- `not materialized` (these and `touches`): read twice (the dates loaded since, the touches), they
-- would otherwise be held whole before the rebuilt dates filter them.
sessions as {{ inlined() }} (
    select * from {{ ref('fct_web_sessions') }}
),

calls as {{ inlined() }} (
    select * from {{ ref('stg_call_center__calls') }}
),

social as {{ inlined() }} (
    select * from {{ ref('int_social_interactions_scored') }}
),

identity as (
    select * from {{ ref('customer_identity_map') }}
),

touches as {{ inlined() }} (
    select
        concat('web:', web_session_id) as interaction_id,
        'web' as channel,
        'web_session' as interaction_type,
        session_started_at as occurred_at,
        session_date as occurred_date,
        session_local_date as occurred_local_date,
        case when orders > 0 then 'purchase' when is_cart_abandoned then 'cart_abandoned' else 'browse' end as outcome,
        false as is_complaint,
        cast(null as integer) as csat,
        cast(null as integer) as sentiment_score,
        cast(null as {{ dbt.type_string() }}) as sentiment,
        duration_seconds,
        has_login as carries_identifier,
        identity_record_key,
        source_loaded_at
    from sessions
    union all
    select
        concat('call:', call_key),
        'call_center',
        coalesce(reason, 'unknown'),
        started_at,
        started_date,
        started_local_date,
        coalesce(resolution, 'unknown'),
        coalesce(queue = 'complaints' or reason in ({{ "'" ~ var('complaint_reasons') | join("', '") ~ "'" }}), false),
        cast(csat as integer),
        cast(null as integer),
        cast(null as {{ dbt.type_string() }}),
        cast(duration_seconds as bigint),
        phone_e164 is not null or customer_ref is not null,
        concat('call:', call_key),
        source_loaded_at
    from calls
    union all
    select
        concat('social:', interaction_key),
        'social',
        interaction_type,
        occurred_at,
        occurred_date,
        occurred_local_date,
        cast(null as {{ dbt.type_string() }}),
        coalesce(sentiment = 'negative' and interaction_type in ('dm', 'mention', 'comment', 'post'), false),
        cast(null as integer),
        sentiment_score,
        sentiment,
        cast(null as bigint),
        linked_phone_e164 is not null or linked_email is not null,
        concat('social_account:', platform, ':', handle),
        source_loaded_at
    from social
),

final as (
    select
        touches.*,
        identity.customer_key
    from touches
    left join identity on touches.identity_record_key = identity.record_key
    {{ incremental_dates_filter('occurred_local_date', 'touches', 'identity') }}
)

select * from final
