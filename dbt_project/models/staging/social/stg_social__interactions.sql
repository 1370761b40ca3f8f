{{ config(unique_key='interaction_key') }}

with

-- `not materialized` (this and `renamed`): see macros latest_deliveries and rank_deliveries.
source as {{ inlined() }} (
    select * from {{ source('raw', 'social') }}
),

renamed as {{ inlined() }} (
    select
        concat(_source, ':', interaction_id) as interaction_key,
        _source as source_name,
        {{ text('interaction_id') }} as interaction_id,
        {{ to_utc('occurred_at') }} as occurred_at,
        {{ code('platform') }} as platform,
        {{ code('handle') }} as handle,
        {{ code('interaction_type') }} as interaction_type,
        {{ text('text') }} as interaction_text,
        {{ text('parent_id') }} as parent_id,
        {{ strip_to_phone_chars('linked_phone') }} as linked_phone_digits,
        {{ normalize_email('linked_email') }} as linked_email,
        _partition_date as occurred_local_date,
        {{ lineage_columns() }}
    from source
),

deduplicated as (
    {{ latest_deliveries('renamed', 'interaction_key') }}
),

final as (
    select
        interaction_key,
        source_name,
        interaction_id,
        occurred_at,
        cast(occurred_at as date) as occurred_date,
        occurred_local_date,
        platform,
        handle,
        interaction_type,
        interaction_text,
        parent_id,
        {{ phone_e164('linked_phone_digits') }} as linked_phone_e164,
        linked_email,
        source_file,
        source_row_number,
        source_partition_date,
        _loaded_at as source_loaded_at
    from deduplicated
    where delivery_rank = 1
)

select * from final
