{{ config(unique_key='campaign_contact_id') }}

with

-- `not materialized` (this and `renamed`): see macros latest_deliveries and rank_deliveries.
source as {{ inlined() }} (
    select * from {{ source('raw', 'campaigns') }}
),

renamed as {{ inlined() }} (
    select
        concat(_source, ':', campaign_id, ':', contact_id) as campaign_contact_id,
        _source as source_name,
        {{ text('campaign_id') }} as campaign_id,
        {{ text('contact_id') }} as contact_id,
        {{ code('arm') }} as arm,
        {{ to_utc('assigned_at') }} as assigned_at,
        {{ text('customer_ref') }} as customer_ref,
        {{ text('loyalty_card') }} as loyalty_card,
        {{ normalize_email('email') }} as email,
        {{ text('phone') }} as phone_raw,
        {{ strip_to_phone_chars('phone') }} as phone_digits,
        {{ code('channel') }} as contact_channel,
        cast(coalesce(offer_cost, 0) as decimal(18, 4)) as offer_cost,
        {{ text('campaign_name') }} as campaign_name,
        {{ text('offer') }} as offer,
        _is_control as is_control,
        _randomized as is_randomized,
        _response_window_days as response_window_days,
        _partition_date as assigned_local_date,
        {{ lineage_columns() }}
    from source
),

deduplicated as (
    {{ latest_deliveries('renamed', 'campaign_contact_id') }}
),

final as (
    select
        campaign_contact_id,
        source_name,
        campaign_id,
        contact_id,
        arm,
        is_control,
        is_randomized,
        response_window_days,
        assigned_at,
        assigned_local_date,
        customer_ref,
        loyalty_card,
        email,
        phone_raw,
        {{ phone_e164('phone_digits') }} as phone_e164,
        contact_channel,
        offer_cost,
        campaign_name,
        offer,
        source_file,
        source_row_number,
        source_partition_date,
        _loaded_at as source_loaded_at
    from deduplicated
    where delivery_rank = 1
)

select * from final
