{{ config(unique_key='web_event_id') }}

with

-- `not materialized` (this and `renamed`): see macros latest_deliveries and rank_deliveries.
source as {{ inlined() }} (
    select * from {{ source('raw', 'web') }}
),

renamed as {{ inlined() }} (
    select
        concat(_source, ':', event_id) as web_event_id,
        _source as source_name,
        {{ text('event_id') }} as event_id,
        {{ to_utc('event_at') }} as event_at,
        {{ code('event_type') }} as event_type,
        {{ text('cookie_id') }} as cookie_id,
        {{ text('session_id') }} as tracker_session_id,
        {{ text('customer_ref') }} as customer_ref,
        {{ normalize_email('email') }} as email,
        {{ text('page_url') }} as page_url,
        {{ text('sku') }} as sku,
        quantity,
        cast(unit_price as decimal(18, 4)) as unit_price,
        upper({{ text('currency') }}) as currency,
        {{ text('order_id') }} as order_id,
        {{ text('search_query') }} as search_query,
        {{ code('utm_source') }} as utm_source,
        {{ code('utm_medium') }} as utm_medium,
        {{ code('utm_campaign') }} as utm_campaign,
        {{ text('user_agent') }} as user_agent,
        _partition_date as event_local_date,
        {{ lineage_columns() }}
    from source
),

deduplicated as (
    {{ latest_deliveries('renamed', 'web_event_id') }}
),

final as (
    select
        web_event_id,
        source_name,
        event_id,
        event_at,
        cast(event_at as date) as event_date,
        event_local_date,
        event_type,
        cookie_id,
        tracker_session_id,
        customer_ref,
        email,
        email is not null and {{ email_domain_is_typo('email') }} as is_email_domain_typo,
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
        source_file,
        source_row_number,
        source_partition_date,
        _loaded_at as source_loaded_at
    from deduplicated
    where delivery_rank = 1
)

select * from final
