-- One row per version of a customer (SCD type 2): a new version starts whenever the registry
-- changes the customer's region, city, tier, marketing consent, name, email or phone. The history
-- comes from the registry's own dated updates (every profile version is kept in staging), so a
-- rebuild gives the same versions and no snapshot run can be missed. A customer with two
-- registrations takes the attributes of whichever was updated last. Customers known only from
-- receipts, calls or cookies get one version with the attributes left empty.
-- Incremental on DuckDB by customer: rebuilds every version of the customers whose facts, identity
-- or profile changed (macros/changed_customers.sql); a table on Spark, rebuilt each run.
{{ config(**dim_customer_config()) }}

with

profiles as (
    select * from {{ ref('stg_customers__profiles') }}
),

identity as (
    select * from {{ ref('customer_identity_map') }}
),

keys as (
    select * from {{ source('identity', 'int_customer_keys_assigned') }}
),

order_lines as (
    select * from {{ ref('fct_order_lines') }}
),

interactions as (
    select * from {{ ref('fct_interactions') }}
),

customer_profiles as (
    select identity.customer_key, profiles.*
    from profiles
    inner join identity on identity.record_key = concat('profile:', profiles.customer_ref)
    {%- if is_incremental() %}
    where {{ in_customer_scope('identity.customer_key') }}
    {%- endif %}
),

first_seen as (
    select customer_key, min(seen_at) as first_seen_at
    from (
        select customer_key, ordered_at as seen_at from order_lines
        union all
        select customer_key, occurred_at from interactions
        union all
        select customer_key, cast(signup_date as timestamp) from customer_profiles
    ) as seen
    where customer_key is not null
    {%- if is_incremental() %}
        and {{ in_customer_scope('customer_key') }}
    {%- endif %}
    group by customer_key
),

registered as (
    select
        customer_key,
        min(updated_local_date) as registered_local_date,
        max(source_loaded_at) as source_loaded_at
    from customer_profiles
    group by customer_key
),

customer_refs as (
    select customer_key, min(identifier_value) as customer_ref
    from keys
    where identifier_type = 'customer_ref'
    {%- if is_incremental() %}
        and {{ in_customer_scope('customer_key') }}
    {%- endif %}
    group by customer_key
),

member_versions as (
    select
        *,
        {{ dbt.hash("concat_ws('|', coalesce(region, ''), coalesce(city, ''), coalesce(tier, ''), coalesce(cast(has_marketing_consent as " ~ dbt.type_string() ~ "), ''), coalesce(full_name, ''), coalesce(email, ''), coalesce(phone_e164, ''))") }} as tracked_attributes_hash
    from customer_profiles
),

changes as (
    select
        *,
        lag(tracked_attributes_hash) over (
            partition by customer_key order by updated_at asc nulls last, profile_version_id asc
        ) as previous_hash
    from member_versions
),

versions as (
    select
        customer_key,
        customer_ref,
        updated_at as changed_at,
        full_name,
        gender,
        birth_date,
        email,
        phone_e164,
        region,
        city,
        loyalty_card,
        tier,
        signup_channel,
        signup_date,
        has_marketing_consent,
        consent_updated_at
    from changes
    where previous_hash is null or previous_hash <> tracked_attributes_hash
),

unprofiled as (
    select
        first_seen.customer_key,
        customer_refs.customer_ref,
        first_seen.first_seen_at as changed_at,
        cast(null as {{ dbt.type_string() }}) as full_name,
        cast(null as {{ dbt.type_string() }}) as gender,
        cast(null as date) as birth_date,
        cast(null as {{ dbt.type_string() }}) as email,
        cast(null as {{ dbt.type_string() }}) as phone_e164,
        cast(null as {{ dbt.type_string() }}) as region,
        cast(null as {{ dbt.type_string() }}) as city,
        cast(null as {{ dbt.type_string() }}) as loyalty_card,
        cast(null as {{ dbt.type_string() }}) as tier,
        cast(null as {{ dbt.type_string() }}) as signup_channel,
        cast(null as date) as signup_date,
        cast(null as boolean) as has_marketing_consent,
        cast(null as timestamp) as consent_updated_at
    from first_seen
    left join customer_refs on first_seen.customer_key = customer_refs.customer_key
    where first_seen.customer_key not in (select member_versions.customer_key from member_versions)
),

all_versions as (
    select * from versions
    union all
    select * from unprofiled
),

numbered as (
    select
        *,
        row_number() over (partition by customer_key order by changed_at asc nulls last, customer_ref asc nulls last) as version_number,
        lead(changed_at) over (partition by customer_key order by changed_at asc nulls last, customer_ref asc nulls last) as next_changed_at
    from all_versions
),

final as (
    select
        concat(numbered.customer_key, ':', cast(numbered.version_number as {{ dbt.type_string() }})) as customer_version_key,
        numbered.customer_key,
        cast(numbered.version_number as integer) as version_number,
        -- The first version also covers what the customer did before the registry knew them.
        case
            when numbered.version_number = 1 and first_seen.first_seen_at < numbered.changed_at then first_seen.first_seen_at
            else numbered.changed_at
        end as valid_from,
        numbered.next_changed_at as valid_to,
        numbered.next_changed_at is null as is_current,
        numbered.customer_ref,
        numbered.full_name,
        numbered.gender,
        numbered.birth_date,
        numbered.email,
        numbered.phone_e164,
        numbered.region,
        numbered.city,
        numbered.loyalty_card,
        numbered.tier,
        numbered.signup_channel,
        numbered.signup_date,
        numbered.has_marketing_consent,
        numbered.consent_updated_at,
        first_seen.first_seen_at,
        registered.registered_local_date,
        registered.source_loaded_at
    from numbered
    left join first_seen on numbered.customer_key = first_seen.customer_key
    left join registered on numbered.customer_key = registered.customer_key
)

select * from final
