-- Contact values (phone, email) that the data shows are shared by different people: placeholders
-- typed for customers who give none, a family's landline, a shop's own phone. They are not edges
-- of the identity graph (int_customer_keys_assigned leaves them out). Decided from evidence in
-- the records, not from a list of known values; thresholds are the identity_guard_* vars.
{{ config(materialized='table') }}

with

-- The collection read twice, filtered each time: one CTE of every identifier, read by both, would be
-- materialized whole first (12 million rows at a million customers), which was slower.
contacts as (
    select record_type, record_id, identifier_type, identifier_value
    from {{ ref('int_identifiers_collected') }}
    where identifier_type in ('phone', 'email')
),

anchors as (
    select record_type, record_id, identifier_type, identifier_value
    from {{ ref('int_identifiers_collected') }}
    where identifier_type in ('customer_ref', 'loyalty_card')
),

profiles as (
    select * from {{ ref('stg_customers__profiles') }}
),

records_per_value as (
    select identifier_type, identifier_value, count(*) as records
    from contacts
    group by identifier_type, identifier_value
),

-- How many records a value of each type usually has: the frequency bound is a multiple of it.
typical as (
    select identifier_type, {{ quantile('records', 0.99) }} as records_p99
    from records_per_value
    group by identifier_type
),

-- A value on one record cannot be shared: only the others are weighed.
candidates as (
    select c.*
    from contacts as c
    inner join records_per_value as r
        on c.identifier_type = r.identifier_type and c.identifier_value = r.identifier_value
    where r.records > 1
),

-- The registry's word on who holds a customer ref or a loyalty card.
owners as (
    select 'customer_ref' as anchor_type, customer_ref as anchor_value, lower(full_name) as name_key, birth_date
    from profiles
    union all
    select 'loyalty_card', loyalty_card, lower(full_name), birth_date
    from profiles
    where loyalty_card is not null
),

-- The people-evidence each value co-occurs with: the refs and cards on the same records, and the
-- names and birth dates the registry gives them.
evidence as (
    select
        c.identifier_type,
        c.identifier_value,
        a.identifier_type as anchor_type,
        a.identifier_value as anchor_value,
        o.name_key,
        o.birth_date
    from candidates as c
    inner join anchors as a
        on c.record_type = a.record_type and c.record_id = a.record_id
    left join owners as o
        on a.identifier_type = o.anchor_type and a.identifier_value = o.anchor_value
),

-- Most values are one person's: each kind of evidence holds at most one value, which its least
-- and greatest show. Only the values where they differ are counted distinctly (four distinct
-- counts over every value's evidence took most of this model's time at a million customers).
evidence_bounds as (
    select
        identifier_type,
        identifier_value,
        min(case when anchor_type = 'customer_ref' then anchor_value end) as least_ref,
        max(case when anchor_type = 'customer_ref' then anchor_value end) as greatest_ref,
        min(case when anchor_type = 'loyalty_card' then anchor_value end) as least_card,
        max(case when anchor_type = 'loyalty_card' then anchor_value end) as greatest_card,
        min(name_key) as least_name,
        max(name_key) as greatest_name,
        min(birth_date) as least_birth_date,
        max(birth_date) as greatest_birth_date
    from evidence
    group by identifier_type, identifier_value
),

mixed as (
    select identifier_type, identifier_value
    from evidence_bounds
    where least_ref < greatest_ref
       or least_card < greatest_card
       or least_name < greatest_name
       or least_birth_date < greatest_birth_date
),

mixed_counts as (
    select
        e.identifier_type,
        e.identifier_value,
        count(distinct case when e.anchor_type = 'customer_ref' then e.anchor_value end) as customer_refs,
        count(distinct case when e.anchor_type = 'loyalty_card' then e.anchor_value end) as loyalty_cards,
        count(distinct e.name_key) as names,
        count(distinct e.birth_date) as birth_dates
    from evidence as e
    {{ semi_join() }} mixed as m
        on e.identifier_type = m.identifier_type and e.identifier_value = m.identifier_value
    group by e.identifier_type, e.identifier_value
),

per_value as (
    select
        b.identifier_type,
        b.identifier_value,
        coalesce(c.customer_refs, case when b.least_ref is null then 0 else 1 end) as customer_refs,
        coalesce(c.loyalty_cards, case when b.least_card is null then 0 else 1 end) as loyalty_cards,
        coalesce(c.names, case when b.least_name is null then 0 else 1 end) as names,
        coalesce(c.birth_dates, case when b.least_birth_date is null then 0 else 1 end) as birth_dates
    from evidence_bounds as b
    left join mixed_counts as c
        on b.identifier_type = c.identifier_type and b.identifier_value = c.identifier_value
),

weighed as (
    select
        r.identifier_type,
        r.identifier_value,
        r.records,
        coalesce(p.customer_refs, 0) as customer_refs,
        coalesce(p.loyalty_cards, 0) as loyalty_cards,
        coalesce(p.names, 0) as names,
        coalesce(p.birth_dates, 0) as birth_dates,
        -- People who disagree on both name and birth date are different people; a typo in one of
        -- them is the same person registering twice. Names alone where no birth date is known.
        case when coalesce(p.birth_dates, 0) = 0 then coalesce(p.names, 0)
             else least(p.names, p.birth_dates) end as people,
        greatest({{ var('identity_guard_outlier_min_records') }}, {{ var('identity_guard_outlier_factor') }} * t.records_p99) as records_bound
    from records_per_value as r
    inner join typical as t on r.identifier_type = t.identifier_type
    left join per_value as p
        on r.identifier_type = p.identifier_type and r.identifier_value = p.identifier_value
    where r.records > 1 or r.identifier_value in {{ string_list(var('identity_guard_deny')) }}
),

decided as (
    select
        *,
        case
            when identifier_value in {{ string_list(var('identity_guard_allow')) }} then null
            when identifier_value in {{ string_list(var('identity_guard_deny')) }} then 'deny_list'
            when people > {{ var('identity_guard_max_people') }} then 'shared_by_people'
            when loyalty_cards > {{ var('identity_guard_max_cards') }} then 'shared_by_cards'
            when people = 0 and records > records_bound then 'frequency_outlier'
            -- The evidence first: the pattern's 43 substring searches only for the values that need them.
            when (names > 1 or loyalty_cards > 1 or records > records_bound / 10)
                 and {{ looks_like_placeholder('identifier_value') }} then 'placeholder_pattern'
        end as guard_reason
    from weighed
),

final as (
    select
        identifier_type,
        identifier_value,
        guard_reason,
        records,
        customer_refs,
        loyalty_cards,
        names,
        birth_dates,
        people,
        {{ looks_like_placeholder('identifier_value') }} as looks_like_placeholder,
        records_bound
    from decided
    where guard_reason is not null
)

select * from final
