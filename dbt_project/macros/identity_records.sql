{#- The incremental identifier collection (int_identifiers_collected): which records a run recomputes. -#}

{#- The relation an erasure lists the records it took staging rows from in (serving/erasure.py); None until one did. -#}
{% macro erased_identity_records() -%}
    {{ return(adapter.get_relation(database=this.database, schema='intermediate',
                                   identifier='int_identifiers_collected__erased')) }}
{%- endmacro %}

{#- (record_type, record_id) of every record whose edges may differ from those built: a row of it
    loaded since the table's newest load; a partition of its source that its rows span loaded
    again since (a re-delivered or late day may have dropped its rows; a record of several sources
    matches every source); its staging rows cut by an erasure; a profile whose fuzzy matches
    changed (the model's CTE `profile_matches`). Rows deleted from raw other than by the loader or
    `crm forget` need a full refresh, as for staging. -#}
{% macro touched_identity_records() -%}
    {%- set erased = erased_identity_records() -%}
    {%- set since = "(select coalesce(max(source_loaded_at), cast('1900-01-01' as timestamp)) from " ~ this ~ ")" -%}
    select distinct record_type, record_id from (
        select 'profile' as record_type, customer_ref as record_id
        from {{ ref('stg_customers__profiles') }} where source_loaded_at > {{ since }}
        union all
        select 'order', concat(source_name, ':', order_id)
        from {{ ref('stg_store__order_lines') }} where source_loaded_at > {{ since }}
        union all
        select 'web_cookie', cookie_id from {{ ref('stg_web__events') }} where source_loaded_at > {{ since }}
        union all
        select 'call', call_key from {{ ref('stg_call_center__calls') }} where source_loaded_at > {{ since }}
        union all
        select 'social_account', concat(platform, ':', handle)
        from {{ ref('stg_social__interactions') }} where source_loaded_at > {{ since }}
        union all
        select built.record_type, built.record_id
        from {{ this }} as built
        inner join {{ source('raw', 'load_log') }} as reloaded
            on (built.source_name = reloaded.source or built.source_name is null)
            and built.first_partition_date <= reloaded.partition_end
            and built.last_partition_date >= reloaded.partition_start
        where reloaded.finished_at > {{ since }}
        union all
        select 'profile', record_id from (
            (
                select customer_ref_l as record_id, concat(customer_ref_l, '~', customer_ref_r) as match_id from profile_matches
                union all
                select customer_ref_r, concat(customer_ref_l, '~', customer_ref_r) from profile_matches
            )
            except
            select record_id, identifier_value from {{ this }} where identifier_type = 'fuzzy_profile_match'
        ) as matched_now
        union all
        select 'profile', record_id from (
            select record_id, identifier_value as match_id from {{ this }} where identifier_type = 'fuzzy_profile_match'
            except
            (
                select customer_ref_l, concat(customer_ref_l, '~', customer_ref_r) from profile_matches
                union all
                select customer_ref_r, concat(customer_ref_l, '~', customer_ref_r) from profile_matches
            )
        ) as matched_before
        {%- if erased is not none %}
        union all
        select record_type, record_id from {{ erased }}
        {%- endif %}
    ) as touched
    where record_id is not null
{%- endmacro %}

{#- In an incremental run, the `where` keeping a staging table's rows of the touched records only. -#}
{% macro only_touched(record_type, record_id) -%}
    {%- if is_incremental() %}
    where {{ record_id }} in (select touched.record_id from touched where touched.record_type = '{{ record_type }}')
    {%- endif %}
{%- endmacro %}

{#- Post-hook: touched records left without an edge go, listed for the customer keys (identity/duckdb.py:
    EMPTIED), which drop their edges; the erasure's list, consumed, is emptied. -#}
{% macro identity_records_collected() -%}
    {%- if is_incremental() %}
    {%- set emptied = this.incorporate(path={"identifier": this.identifier ~ "__emptied"}) %}
    create table if not exists {{ emptied }} as
        select record_type, record_id, collected_at from {{ this }} where false;
    insert into {{ emptied }}
        select record_type, record_id, collected_at from {{ this }} where identifier_type is null;
    delete from {{ this }} where identifier_type is null;
    {%- endif %}
    {%- set erased = erased_identity_records() if execute else none -%}
    {%- if erased is not none %}
    delete from {{ erased }};
    {%- endif %}
{%- endmacro %}
