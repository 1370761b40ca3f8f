-- Customers that fell apart: the pieces that left a key, which kept its old key, and the new key
-- each got (a contact newly guarded as shared, an erased record that held them together).
with

keys as (
    select * from {{ source('identity', 'int_customer_keys_assigned') }}
),

final as (
    select distinct
        previous_customer_key as split_customer_key,
        customer_key as new_customer_key,
        merged_at as split_at
    from keys
    where key_change = 'split'
)

select * from final
