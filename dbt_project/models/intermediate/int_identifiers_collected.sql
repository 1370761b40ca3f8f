-- Every strong identifier seen on every source record: the nodes and edges of the identity graph.
-- A record is what one system knows as one party: a registry member (all its versions), a store
-- receipt, a web cookie, a call, a social account. Each edge carries its record's lineage: the
-- source (NULL when several), the first and last partition date and the newest load of its rows.
-- A table, not a view: the identity graph, the identity map and the uniqueness test each read it,
-- and each recomputed three scans of every web event.
-- Incremental by record on DuckDB (macro touched_identity_records): a run recomputes, from all
-- their rows, the records with a row loaded since, those whose rows may have left with a reloaded
-- partition, those an erasure took rows from, and the profiles whose fuzzy matches changed. A
-- record left without an edge comes back as a row without an identifier, which the post-hook
-- moves to int_identifiers_collected__emptied. `collected_at` says when a record's rows were
-- written: the customer keys take again only the edges collected since their last run. On Spark (no delete by key without Delta or Iceberg) a table, rebuilt each run.
{{ config(
    materialized=('incremental' if target.type == 'duckdb' else 'table'),
    incremental_strategy='delete+insert',
    unique_key=['record_type', 'record_id'],
    on_schema_change='fail',
    post_hook="{{ identity_records_collected() }}",
) }}

with

profile_matches as (
    select * from {{ source('identity', 'int_profiles_matched') }}
    where is_accepted
),

{%- if is_incremental() %}

touched as (
    {{ touched_identity_records() }}
),
{%- endif %}

profiles as (
    select * from {{ ref('stg_customers__profiles') }}
    {{ only_touched('profile', 'customer_ref') }}
),

order_lines as (
    select * from {{ ref('stg_store__order_lines') }}
    {{ only_touched('order', "concat(source_name, ':', order_id)") }}
),

-- Each web identity once, with its lineage: 30 million events hold 3.7 million at 1 million
-- customers, and the shared-cookie test and three identifier lists below each read them.
web_events as (
    select
        cookie_id,
        customer_ref,
        email,
        is_email_domain_typo,
        min(source_name) as first_source,
        max(source_name) as last_source,
        min(source_partition_date) as first_partition_date,
        max(source_partition_date) as last_partition_date,
        max(source_loaded_at) as source_loaded_at
    from {{ ref('stg_web__events') }}
    {{ only_touched('web_cookie', 'cookie_id') }}
    group by cookie_id, customer_ref, email, is_email_domain_typo
),

calls as (
    select * from {{ ref('stg_call_center__calls') }}
    {{ only_touched('call', 'call_key') }}
),

social as (
    select * from {{ ref('stg_social__interactions') }}
    {{ only_touched('social_account', "concat(platform, ':', handle)") }}
),

-- A cookie that logged in as more than one account is a shared device: it links nobody.
-- (Emails with a misspelt domain are the same person typing badly, not another account.)
single_account_cookies as (
    select cookie_id
    from web_events
    group by cookie_id
    having count(distinct customer_ref) <= 1
       and count(distinct case when not is_email_domain_typo then email end) <= 1
),

identifiers as (
    select 'profile' as record_type, customer_ref as record_id, 'customer_ref' as identifier_type, customer_ref as identifier_value from profiles
    union all
    select 'profile', customer_ref, 'loyalty_card', loyalty_card from profiles
    union all
    select 'profile', customer_ref, 'phone', phone_e164 from profiles
    union all
    select 'profile', customer_ref, 'email', email from profiles where not is_email_invalid
    union all
    select 'order', concat(source_name, ':', order_id), 'customer_ref', customer_ref from order_lines
    union all
    select 'order', concat(source_name, ':', order_id), 'loyalty_card', loyalty_card from order_lines
    union all
    select 'order', concat(source_name, ':', order_id), 'phone', phone_e164 from order_lines
    union all
    select 'web_cookie', w.cookie_id as record_id, 'cookie', w.cookie_id as identifier_value from web_events as w
    union all
    select 'web_cookie', w.cookie_id, 'customer_ref', w.customer_ref
    from web_events as w inner join single_account_cookies as c on w.cookie_id = c.cookie_id
    union all
    select 'web_cookie', w.cookie_id, 'email', w.email
    from web_events as w inner join single_account_cookies as c on w.cookie_id = c.cookie_id
    union all
    select 'call', call_key, 'phone', phone_e164 from calls
    union all
    select 'call', call_key, 'customer_ref', customer_ref from calls
    union all
    select 'social_account', concat(platform, ':', handle), 'social_handle', concat(platform, ':', handle) from social
    union all
    select 'social_account', concat(platform, ':', handle), 'phone', linked_phone_e164 from social
    union all
    select 'social_account', concat(platform, ':', handle), 'email', linked_email from social
    union all
    select 'profile', customer_ref_l, 'fuzzy_profile_match', concat(customer_ref_l, '~', customer_ref_r) from profile_matches
    union all
    select 'profile', customer_ref_r, 'fuzzy_profile_match', concat(customer_ref_l, '~', customer_ref_r) from profile_matches
),

-- Each record's rows: where they come from and when they were loaded (a web identity's first and
-- last partition are two rows).
lineage as (
    select 'profile' as record_type, customer_ref as record_id, source_name, source_partition_date, source_loaded_at
    from profiles
    union all
    select 'order', concat(source_name, ':', order_id), source_name, source_partition_date, source_loaded_at
    from order_lines
    union all
    select 'web_cookie', cookie_id, first_source, first_partition_date, source_loaded_at from web_events
    union all
    select 'web_cookie', cookie_id, last_source, last_partition_date, source_loaded_at from web_events
    union all
    select 'call', call_key, source_name, source_partition_date, source_loaded_at from calls
    union all
    select 'social_account', concat(platform, ':', handle), source_name, source_partition_date, source_loaded_at
    from social
),

records as (
    select
        record_type,
        record_id,
        case when min(source_name) = max(source_name) then min(source_name) end as source_name,
        min(source_partition_date) as first_partition_date,
        max(source_partition_date) as last_partition_date,
        max(source_loaded_at) as source_loaded_at
    from lineage
    group by record_type, record_id
),

edges as (
    select distinct record_type, record_id, identifier_type, identifier_value
    from identifiers
    where record_id is not null and identifier_value is not null
),

final as (
    select
        edges.record_type,
        edges.record_id,
        edges.identifier_type,
        edges.identifier_value,
        records.source_name,
        records.first_partition_date,
        records.last_partition_date,
        records.source_loaded_at,
        {{ dbt.current_timestamp() }} as collected_at
    from edges
    left join records on edges.record_type = records.record_type and edges.record_id = records.record_id
    {%- if is_incremental() %}
    {{ semi_join() }} touched on edges.record_type = touched.record_type and edges.record_id = touched.record_id
    union all
    -- A touched record with no edge left: a row without identifier replaces its old ones, then goes.
    select
        touched.record_type,
        touched.record_id,
        cast(null as {{ dbt.type_string() }}),
        cast(null as {{ dbt.type_string() }}),
        cast(null as {{ dbt.type_string() }}),
        cast(null as date),
        cast(null as date),
        cast(null as timestamp with time zone),
        {{ dbt.current_timestamp() }}
    from touched
    {{ anti_join() }} edges on touched.record_type = edges.record_type and touched.record_id = edges.record_id
    {%- endif %}
)

select * from final
