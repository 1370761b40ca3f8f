{{ config(unique_key='profile_version_id') }}

with

-- `not materialized` (this and `renamed`): see macros latest_deliveries and rank_deliveries.
source as {{ inlined() }} (
    select * from {{ source('raw', 'customers') }}
),

renamed as {{ inlined() }} (
    select
        concat(_source, ':', customer_ref, ':', cast({{ to_utc('updated_at') }} as {{ dbt.type_string() }})) as profile_version_id,
        _source as source_name,
        {{ text('customer_ref') }} as customer_ref,
        {{ to_utc('updated_at') }} as updated_at,
        {{ clean_name('full_name') }} as full_name,
        {{ code('gender') }} as gender,
        birth_date,
        {{ normalize_email('email') }} as email,
        {{ text('phone') }} as phone_raw,
        {{ strip_to_phone_chars('phone') }} as phone_digits,
        {{ text('region') }} as region,
        {{ text('city') }} as city,
        {{ text('loyalty_card') }} as loyalty_card,
        {{ code('tier') }} as tier,
        {{ code('signup_channel') }} as signup_channel,
        signup_date,
        marketing_consent as has_marketing_consent,
        {{ to_utc('consent_updated_at') }} as consent_updated_at,
        _partition_date as updated_local_date,
        {{ lineage_columns() }}
    from source
),

deduplicated as (
    {{ latest_deliveries('renamed', 'profile_version_id') }}
),

final as (
    select
        profile_version_id,
        source_name,
        customer_ref,
        updated_at,
        full_name,
        gender,
        birth_date,
        email,
        email is not null and {{ email_domain_is_typo('email') }} as is_email_domain_typo,
        email is not null and not {{ email_is_valid('email') }} as is_email_invalid,
        phone_raw,
        {{ phone_e164('phone_digits') }} as phone_e164,
        phone_digits is not null and {{ phone_e164('phone_digits') }} is null as has_unusable_phone,
        region,
        city,
        loyalty_card,
        tier,
        signup_channel,
        signup_date,
        has_marketing_consent,
        consent_updated_at,
        updated_local_date,
        source_file,
        source_row_number,
        source_partition_date,
        _loaded_at as source_loaded_at
    from deduplicated
    where delivery_rank = 1
)

select * from final
