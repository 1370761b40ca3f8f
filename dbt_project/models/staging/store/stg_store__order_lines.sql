{{ config(unique_key='order_line_id') }}

with

-- `not materialized` (this and `renamed`): see macros latest_deliveries and rank_deliveries.
source as {{ inlined() }} (
    select * from {{ source('raw', 'store') }}
),

renamed as {{ inlined() }} (
    select
        concat(_source, ':', order_id, ':', cast(line_number as {{ dbt.type_string() }})) as order_line_id,
        _source as source_name,
        {{ text('order_id') }} as order_id,
        line_number,
        {{ to_utc('ordered_at') }} as ordered_at,
        {{ text('sku') }} as sku,
        {{ text('product_name') }} as product_name,
        {{ code('category') }} as category,
        quantity,
        cast(unit_price as decimal(18, 4)) as unit_price,
        cast(coalesce(discount, 0) as decimal(18, 4)) as discount,
        upper({{ text('currency') }}) as currency,
        {{ text('store_id') }} as store_id,
        {{ text('customer_ref') }} as customer_ref,
        {{ text('loyalty_card') }} as loyalty_card,
        {{ text('phone') }} as phone_raw,
        {{ strip_to_phone_chars('phone') }} as phone_digits,
        {{ code('payment_method') }} as payment_method,
        {{ text('country') }} as country,
        _partition_date as ordered_local_date,
        {{ lineage_columns() }}
    from source
),

deduplicated as (
    {{ latest_deliveries('renamed', 'order_line_id') }}
),

final as (
    select
        order_line_id,
        source_name,
        order_id,
        line_number,
        ordered_at,
        cast(ordered_at as date) as ordered_date,
        ordered_local_date,
        sku,
        product_name,
        category,
        quantity,
        unit_price,
        discount,
        currency,
        quantity < 0 as is_return,
        store_id,
        customer_ref,
        loyalty_card,
        phone_raw,
        {{ phone_e164('phone_digits') }} as phone_e164,
        phone_digits is not null and {{ phone_e164('phone_digits') }} is null as has_unusable_phone,
        payment_method,
        country,
        source_file,
        source_row_number,
        source_partition_date,
        _loaded_at as source_loaded_at
    from deduplicated
    where delivery_rank = 1
)

select * from final
