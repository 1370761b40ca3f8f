{#- Reusable cleaning, written once for every staging model. Where DuckDB and Spark SQL differ,
    a small adapter.dispatch macro holds both spellings (default__ = Spark / ANSI). -#}

{% macro full_match(expr, pattern) -%}
    {{ return(adapter.dispatch('full_match', 'crm_warehouse')(expr, pattern)) }}
{%- endmacro %}
{% macro default__full_match(expr, pattern) -%}({{ expr }} rlike '^({{ pattern }})$'){%- endmacro %}
{% macro duckdb__full_match(expr, pattern) -%}regexp_full_match({{ expr }}, '{{ pattern }}'){%- endmacro %}

{% macro strip_to_phone_chars(expr) -%}
    {{ return(adapter.dispatch('strip_to_phone_chars', 'crm_warehouse')(expr)) }}
{%- endmacro %}
{% macro default__strip_to_phone_chars(expr) -%}
    nullif(regexp_replace(translate({{ expr }}, '０１２３４５６７８９＋', '0123456789+'), '[^0-9+]', ''), '')
{%- endmacro %}
{% macro duckdb__strip_to_phone_chars(expr) -%}
    nullif(regexp_replace(translate({{ expr }}, '０１２３４５６７８９＋', '0123456789+'), '[^0-9+]', '', 'g'), '')
{%- endmacro %}

{#- E.164 from a phone reduced to digits and '+' (strip_to_phone_chars). Chinese mobiles in every
    common shape, Chinese landlines with their area code (trunk 0 or +86), and other countries'
    numbers when they carry a country code. Anything else is NULL: never a wrong number. -#}
{% macro phone_e164(digits) -%}
    case
        when {{ full_match(digits, '([+]86|0086)1[3-9][0-9]{9}') }} then concat('+86', substr({{ digits }}, length({{ digits }}) - 10))
        when {{ full_match(digits, '861[3-9][0-9]{9}') }} then concat('+', {{ digits }})
        when {{ full_match(digits, '1[3-9][0-9]{9}') }} then concat('+86', {{ digits }})
        when {{ full_match(digits, '0[1-9][0-9]{8,10}') }} then concat('+86', substr({{ digits }}, 2))
        when {{ full_match(digits, '[+]86[1-9][0-9]{8,10}') }} then {{ digits }}
        when {{ full_match(digits, '0086[1-9][0-9]{8,10}') }} then concat('+', substr({{ digits }}, 3))
        when {{ full_match(digits, '[+][1-9][0-9]{7,14}') }} then {{ digits }}
        when {{ full_match(digits, '00[1-9][0-9]{7,14}') }} then concat('+', substr({{ digits }}, 3))
    end
{%- endmacro %}

{% macro normalize_email(expr) -%}
    nullif(lower(trim({{ expr }})), '')
{%- endmacro %}

{#- Misspellings of the big mail domains seen in sign-up forms; flagged, never corrected. -#}
{% macro email_domain_is_typo(email) -%}
    split_part({{ email }}, '@', 2) in (
        'gmial.com', 'gmai.com', 'gmail.con', 'gmail.co', 'qq.con', 'qq.cm', '163.cm', '163.con', '126.con',
        'outlok.com', 'outlook.con', 'hotmial.com', 'sina.cn.com', 'foxmial.com', 'yahooo.com'
    )
{%- endmacro %}

{% macro email_is_valid(email) -%}
    {{ full_match(email, '[^@ ]+@[^@ ]+[.][a-z]{2,}') }}
{%- endmacro %}

{#- Names: trimmed, inner spaces collapsed; romanized names in Title Case, Chinese names untouched. -#}
{% macro clean_name(expr) -%}
    {{ return(adapter.dispatch('clean_name', 'crm_warehouse')(expr)) }}
{%- endmacro %}
{% macro default__clean_name(expr) -%}
    case when {{ full_match("regexp_replace(trim(" ~ expr ~ "), ' +', ' ')", "[A-Za-z .-]+") }}
         then initcap(lower(regexp_replace(trim({{ expr }}), ' +', ' ')))
         else nullif(regexp_replace(trim({{ expr }}), ' +', ' '), '') end
{%- endmacro %}
{% macro duckdb__clean_name(expr) -%}
    case when {{ full_match("regexp_replace(trim(" ~ expr ~ "), ' +', ' ', 'g')", "[A-Za-z .-]+") }}
         then array_to_string(list_transform(string_split(lower(regexp_replace(trim({{ expr }}), ' +', ' ', 'g')), ' '),
                                             lambda w: concat(upper(left(w, 1)), substr(w, 2))), ' ')
         else nullif(regexp_replace(trim({{ expr }}), ' +', ' ', 'g'), '') end
{%- endmacro %}

{#- Raw timestamps are instants (TIMESTAMPTZ); staging keeps them as UTC wall-clock TIMESTAMPs. -#}
{% macro to_utc(expr) -%}
    {{ return(adapter.dispatch('to_utc', 'crm_warehouse')(expr)) }}
{%- endmacro %}
{% macro default__to_utc(expr) -%}{{ dbt.cast(expr, api.Column.translate_type('timestamp')) }}{%- endmacro %}
{% macro duckdb__to_utc(expr) -%}timezone('UTC', {{ expr }}){%- endmacro %}

{% macro text(expr) -%}nullif(trim({{ expr }}), ''){%- endmacro %}
{% macro code(expr) -%}nullif(lower(trim({{ expr }})), ''){%- endmacro %}

{#- Lineage columns every staging model carries from raw, and the ranking that keeps the latest
    delivery of each key (the loader keeps one row per key and day; a corrected delivery that
    moved a record to another day can leave two). -#}
{% macro lineage_columns() -%}
        _file as source_file,
        _row_number as source_row_number,
        _partition_date as source_partition_date,
        _loaded_at
{%- endmacro %}

{#- Ranks only the keys delivered more than once; every other row is its key's only delivery
    (rank 1). A window over every row holds every column read at once: at a million customers it
    was a third of the CPU time of sessionizing the web events, and spilled. Counting keys
    needs only the key. `relation` is read three times, so it and the CTEs it reads must be
    `not materialized`: DuckDB would otherwise hold every raw column of every row for the readers,
    where inlined each scans raw for its own columns and filters. Keys compare with `is not
    distinct from`: null keys rank together, as in a window. -#}
{% macro rank_deliveries(relation, key) -%}
    with repeated as (
        select {{ key }} as repeated_key from {{ relation }} group by {{ key }} having count(*) > 1
    )
    select {{ relation }}.*, 1 as delivery_rank
    from {{ relation }} {{ anti_join() }} repeated on {{ relation }}.{{ key }} is not distinct from repeated.repeated_key
    union all
    select
        {{ relation }}.*,
        row_number() over (
            partition by {{ relation }}.{{ key }}
            order by _loaded_at desc nulls last, source_file desc nulls last, source_row_number desc nulls last
        ) as delivery_rank
    from {{ relation }} {{ semi_join() }} repeated on {{ relation }}.{{ key }} is not distinct from repeated.repeated_key
{%- endmacro %}

{#- The latest delivery of each key. A staging model is an incremental table: a run replaces
    (delete+insert on the key) the keys delivered since it last ran and the keys whose kept row left
    raw. A key delivered since is ranked among its new rows alone: they were loaded after every
    row the table holds, so one of them wins over any older delivery, and the run reads only the raw
    rows loaded since. A key whose kept row left raw and that was not delivered again is ranked from
    every raw row of it; with no row left, it is replaced by a row of nulls but the key, without a
    raw row number, which the post-hook delete_vanished_deliveries removes. A full refresh ranks
    every row and gives the same table.
    A kept row leaves raw when the loader replaces its partition (a re-delivered day; the load log
    names the partitions loaded since, so only those are compared with raw) or by an erasure, which
    deletes the staging copy itself; rows deleted from raw any other way need a full refresh. -#}
{% macro latest_deliveries(relation, key) -%}
    {%- if is_incremental() %}
    with watermark as (
        select coalesce(max(source_loaded_at), cast('1900-01-01' as timestamp)) as loaded_at from {{ this }}
    ),
    reloaded as (
        select source, partition_start, partition_end from {{ source('raw', 'load_log') }}
        where finished_at > (select loaded_at from watermark)
    ),
    {#- Only the rows of reloaded partitions are compared, on both sides: a kept row still in raw is
        in the partition it was kept from. -#}
    kept_in_reloaded as (
        select built.{{ key }}, built.source_file, built.source_row_number, built.source_loaded_at
        from {{ this }} as built
        {{ semi_join() }} reloaded on reloaded.source = built.source_name
            and built.source_partition_date between reloaded.partition_start and reloaded.partition_end
    ),
    delivered_in_reloaded as (
        select delivered.source_file, delivered.source_row_number, delivered._loaded_at
        from {{ relation }} as delivered
        {{ semi_join() }} reloaded on reloaded.source = delivered.source_name
            and delivered.source_partition_date between reloaded.partition_start and reloaded.partition_end
    ),
    vanished_keys as (
        select kept.{{ key }} as vanished_key
        from kept_in_reloaded as kept
        {{ anti_join() }} delivered_in_reloaded as delivered
            on delivered.source_file = kept.source_file
            and delivered.source_row_number = kept.source_row_number
            and delivered._loaded_at = kept.source_loaded_at
    ),
    arrived as {{ inlined() }} (
        select * from {{ relation }} where _loaded_at > (select loaded_at from watermark)
    ),
    vanished_only as (
        select vanished_key from vanished_keys
        {{ anti_join() }} arrived on vanished_keys.vanished_key = arrived.{{ key }}
    ),
    delivered_again as {{ inlined() }} (
        select * from arrived
        union all
        select * from {{ relation }} {{ semi_join() }} vanished_only on {{ relation }}.{{ key }} = vanished_only.vanished_key
    )
    select * from ({{ rank_deliveries('delivered_again', key) }})
    union all by name
    select vanished_key as {{ key }}, 1 as delivery_rank from vanished_keys
    {{ anti_join() }} delivered_again on vanished_keys.vanished_key = delivered_again.{{ key }}
    {%- else %}
    {{ rank_deliveries(relation, key) }}
    {%- endif %}
{%- endmacro %}

{#- Post-hook of a staging model: the rows of keys with no delivery left (latest_deliveries). -#}
{% macro delete_vanished_deliveries() -%}
    {%- if is_incremental() %}delete from {{ this }} where source_row_number is null{% endif %}
{%- endmacro %}

{#- Post-hook of a model incremental by a staging table's key: the keys staging no longer holds
    (a delivery that left raw with no other left, an erasure) leave too; `note_customers`: their
    customers are noted first (macros/changed_customers.sql). -#}
{% macro delete_keys_gone_from(key, staging, note_customers=false) -%}
    {%- if is_incremental() %}
    {%- set gone = "not exists (select 1 from " ~ staging ~ " as staged where staged." ~ key ~ " = built." ~ key ~ ")" %}
    {%- if note_customers %}
    insert into main.dbt_changed_customers
    select distinct built.customer_key from {{ this }} as built where built.customer_key is not null and {{ gone }};
    {%- endif %}
    delete from {{ this }} as built
    where {{ gone }}
    {%- endif %}
{%- endmacro %}

{#- ISO day of week, Monday 1 .. Sunday 7. -#}
{% macro day_of_week_iso(expr) -%}
    {{ return(adapter.dispatch('day_of_week_iso')(expr)) }}
{%- endmacro %}
{% macro duckdb__day_of_week_iso(expr) -%}cast(isodow({{ expr }}) as integer){%- endmacro %}
{% macro default__day_of_week_iso(expr) -%}cast(((dayofweek({{ expr }}) + 5) % 7) + 1 as integer){%- endmacro %}

{#- One row (date_day) per day from start to end, both date expressions over `relation`. -#}
{% macro days_between(start, end, relation) -%}
    {{ return(adapter.dispatch('days_between', 'crm_warehouse')(start, end, relation)) }}
{%- endmacro %}
{% macro default__days_between(start, end, relation) -%}
    select explode(sequence({{ start }}, {{ end }}, interval 1 day)) as date_day from {{ relation }}
{%- endmacro %}
{% macro duckdb__days_between(start, end, relation) -%}
    select cast(unnest(generate_series({{ start }}, {{ end }}, interval 1 day)) as date) as date_day from {{ relation }}
{%- endmacro %}
