-- Every customer key retired because its customer turned out to be another, known one.
with

keys as (
    select * from {{ source('identity', 'int_customer_keys_assigned') }}
),

final as (
    select distinct
        previous_customer_key as merged_customer_key,
        customer_key as surviving_customer_key,
        merged_at
    from keys
    where previous_customer_key is not null and coalesce(key_change, 'merged') = 'merged'
)

select * from final
