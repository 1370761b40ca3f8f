{{ config(unique_key='call_key') }}

with

-- `not materialized` (this and `renamed`): see macros latest_deliveries and rank_deliveries.
source as {{ inlined() }} (
    select * from {{ source('raw', 'call_center') }}
),

renamed as {{ inlined() }} (
    select
        concat(_source, ':', call_id) as call_key,
        _source as source_name,
        {{ text('call_id') }} as call_id,
        {{ to_utc('started_at') }} as started_at,
        {{ to_utc('ended_at') }} as ended_at,
        {{ text('phone') }} as phone_raw,
        {{ strip_to_phone_chars('phone') }} as phone_digits,
        {{ text('customer_ref') }} as customer_ref,
        {{ code('queue') }} as queue,
        {{ text('agent_id') }} as agent_id,
        {{ code('reason') }} as reason,
        {{ code('resolution') }} as resolution,
        csat,
        {{ text('notes') }} as notes,
        _partition_date as started_local_date,
        {{ lineage_columns() }}
    from source
),

deduplicated as (
    {{ latest_deliveries('renamed', 'call_key') }}
),

final as (
    select
        call_key,
        source_name,
        call_id,
        started_at,
        ended_at,
        cast(started_at as date) as started_date,
        started_local_date,
        {{ dbt.datediff('started_at', 'ended_at', 'second') }} as duration_seconds,
        phone_raw,
        {{ phone_e164('phone_digits') }} as phone_e164,
        phone_digits is not null and {{ phone_e164('phone_digits') }} is null as has_unusable_phone,
        customer_ref,
        queue,
        agent_id,
        reason,
        resolution,
        csat,
        notes,
        source_file,
        source_row_number,
        source_partition_date,
        _loaded_at as source_loaded_at
    from deduplicated
    where delivery_rank = 1
)

select * from final
