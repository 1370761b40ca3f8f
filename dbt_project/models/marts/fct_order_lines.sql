-- One row per receipt line (store) or web-order line (purchase event), both channels in one grain.
-- Incremental by local order date (see macros/incremental.sql).
-- Web purchases come from the sessionized events, which already hold every web event with its
-- session (30 million events at 1 million customers).
-- A web line is numbered among its order's purchase events, so an incremental run numbers only the
-- orders with a purchase on a rebuilt date, from all their events: the window over every purchase
-- was most of a day's run.
{{ config(**increments_by_day('ordered_local_date', lost_keys={'row': 'order_line_id', 'key': 'order_key'})) }}

with

-- `not materialized`: read twice (the dates loaded since, the lines), they would otherwise be
-- held whole before the rebuilt dates filter them.
store_lines as {{ inlined() }} (
    select * from {{ ref('stg_store__order_lines') }}
),

web_purchases as {{ inlined() }} (
    select * from {{ ref('int_web_events_sessionized') }}
    where event_type = 'purchase' and order_id is not null
),

identity as (
    select * from {{ ref('customer_identity_map') }}
),

{% if is_incremental() %}
loaded_lines as {{ inlined() }} (
    select ordered_local_date, source_loaded_at from store_lines
    union all
    select event_local_date as ordered_local_date, source_loaded_at from web_purchases
),

rebuilt_orders as (
    select distinct source_name, order_id from web_purchases
    where event_local_date in ({{ rebuilt_dates('ordered_local_date', 'loaded_lines', 'identity') }})
),
{% endif %}

store as (
    select
        order_line_id,
        concat(source_name, ':', order_id) as order_key,
        order_id,
        'store' as channel,
        source_name,
        line_number,
        ordered_at,
        ordered_date,
        ordered_local_date,
        store_id,
        sku,
        quantity,
        unit_price,
        discount,
        currency,
        payment_method,
        concat('order:', source_name, ':', order_id) as identity_record_key,
        source_loaded_at
    from store_lines
),

web as (
    select
        concat(source_name, ':', order_id, ':', cast(line_number as {{ dbt.type_string() }})) as order_line_id,
        concat(source_name, ':', order_id) as order_key,
        order_id,
        'web' as channel,
        source_name,
        line_number,
        event_at as ordered_at,
        event_date as ordered_date,
        event_local_date as ordered_local_date,
        cast(null as {{ dbt.type_string() }}) as store_id,
        sku,
        quantity,
        unit_price,
        cast(0 as decimal(18, 4)) as discount,
        currency,
        cast(null as {{ dbt.type_string() }}) as payment_method,
        concat('web_cookie:', cookie_id) as identity_record_key,
        source_loaded_at
    from (
        select
            *,
            row_number() over (partition by source_name, order_id order by event_at asc nulls last, web_event_id asc) as line_number
        from web_purchases
        {% if is_incremental() -%}
        {{ semi_join() }} rebuilt_orders
            on web_purchases.source_name = rebuilt_orders.source_name and web_purchases.order_id = rebuilt_orders.order_id
        {%- endif %}
    ) as purchases
),

lines as {{ inlined() }} (
    select * from store
    union all
    select * from web
),

final as (
    select
        lines.order_line_id,
        lines.order_key,
        lines.order_id,
        lines.channel,
        lines.source_name,
        lines.line_number,
        lines.ordered_at,
        lines.ordered_date,
        lines.ordered_local_date,
        lines.store_id,
        lines.sku,
        lines.quantity,
        lines.unit_price,
        lines.discount,
        cast(lines.quantity * lines.unit_price - lines.discount as decimal(18, 4)) as net_amount,
        lines.currency,
        lines.payment_method,
        lines.quantity < 0 as is_return,
        lines.identity_record_key,
        identity.customer_key,
        lines.source_loaded_at
    from lines
    left join identity on lines.identity_record_key = identity.record_key
    {{ incremental_dates_filter('ordered_local_date', 'loaded_lines', 'identity') }}
)

select * from final
