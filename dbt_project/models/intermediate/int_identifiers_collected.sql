-- Every strong identifier seen on every source record: the nodes and edges of the identity graph.
-- A record is what one system knows as one party: a registry member (all its versions), a store
-- receipt, a web cookie, a call, a social account.
-- A table, not a view: the identity graph, the identity map and the uniqueness test each read it,
-- and each recomputed three scans of every web event. Rebuilt whole each run, as the graph is.
{{ config(materialized='table') }}

with

profiles as (
    select * from {{ ref('stg_customers__profiles') }}
),

order_lines as (
    select * from {{ ref('stg_store__order_lines') }}
),

-- Each web identity once: 30 million events hold 3.7 million at 1 million customers, and the
-- shared-cookie test and three identifier lists below each read them.
web_events as (
    select distinct cookie_id, customer_ref, email, is_email_domain_typo from {{ ref('stg_web__events') }}
),

calls as (
    select * from {{ ref('stg_call_center__calls') }}
),

social as (
    select * from {{ ref('stg_social__interactions') }}
),

profile_matches as (
    select * from {{ source('identity', 'int_profiles_matched') }}
    where is_accepted
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

final as (
    select distinct record_type, record_id, identifier_type, identifier_value
    from identifiers
    where record_id is not null and identifier_value is not null
)

select * from final
