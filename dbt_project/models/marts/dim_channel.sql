-- The channels customers touch the business through.
with

channels as (
    select 'store' as channel, 'Store tills (point of sale)' as description, true as is_sales_channel
    union all
    select 'web', 'Web shop', true
    union all
    select 'call_center', 'Call center', false
    union all
    select 'social', 'Social media', false
),

final as (
    select * from channels
)

select * from final
