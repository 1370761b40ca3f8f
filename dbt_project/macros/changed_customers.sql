{#- The customers whose facts or identity changed since the customer marts last read them, on
    DuckDB, in main.dbt_changed_customers: the daily facts note the customer keys of the rows that
    differ between those they replace and those they insert, the identity map those of the
    records it rebuilds, dim_customer those with a newly loaded profile version. A NULL means every
    customer (a table built whole). dim_customer and customer_360 rebuild the customers noted;
    customer_360 then empties the list. The identity map's own notes are also kept apart, in
    main.dbt_identity_changed_customers, emptied with it: only their rows can need another key
    (rekey_rows), and the facts' notes are most of a day's list. The lists are created at the start
    of every dbt invocation. -#}

{#- on-run-start: the lists, before models of two threads would both create them (a DuckDB
    write-write conflict). The identity list starts with a NULL (every row re-keyed once) where it
    is new beside an older list, which may hold a failed run's notes of the map. -#}
{% macro create_changed_customers() -%}
    {%- if target.type == 'duckdb' -%}
        create table if not exists main.dbt_identity_changed_customers as
        select cast(null as varchar) as customer_key from (select 1) as once
        where exists (select 1 from information_schema.tables
                      where table_schema = 'main' and table_name = 'dbt_changed_customers');
        create table if not exists main.dbt_changed_customers (customer_key varchar)
    {%- endif -%}
{%- endmacro %}

{#- delete+insert by the unique key (the date or the order), noting the customers of the rows that
    differ between the rows replaced and those inserted (a day rebuilt for one late line re-inserts
    every other row as it was: their customers did not change), and the keys of the rows lost when
    the model notes them (macros/lost_keys.sql). -#}
{% macro get_incremental_customer_logged_delete_insert_sql(arg_dict) -%}
    {%- set target, source, key = arg_dict['target_relation'], arg_dict['temp_relation'], arg_dict['unique_key'] -%}
    {%- set row = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    {%- set replaced -%}
        select {{ row }} from {{ target }} where ({{ key }}) in (select ({{ key }}) from {{ source }})
    {%- endset -%}
    {%- set lost_keys = config.get('lost_keys') %}
    {%- if lost_keys %}{{ note_lost_keys(target, source, key, lost_keys) }}{% endif %}
    insert into main.dbt_changed_customers
    select distinct customer_key from (
        ({{ replaced }} except all select {{ row }} from {{ source }})
        union all
        (select {{ row }} from {{ source }} except all {{ replaced }})
    ) as changed
    where customer_key is not null;
    {{ get_delete_insert_merge_sql(target, source, key, arg_dict['dest_columns'], arg_dict['incremental_predicates']) }}
{%- endmacro %}

{#- Post-hook of the daily facts: a fact built whole may have changed any customer; on the
    incremental path, the rows whose record the identity map now gives another key (or none) take
    it, and both keys are noted (macros/incremental.sql). Only rows whose key the list holds can
    have one (the identity map, built before the facts, noted every key its rebuilt records left
    or took, in its own list), and rows of no customer whose record now has a listed key; every
    row when either list holds a NULL. -#}
{% macro rekey_rows() -%}
    {%- if not is_incremental() -%}
        insert into main.dbt_changed_customers values (null)
    {%- else -%}
        {%- set identity = ref('customer_identity_map') -%}
        {%- set changed = 'select customer_key from main.dbt_identity_changed_customers' -%}
        create or replace temp table _rekeyed as
        select built.identity_record_key, built.customer_key as old_key, identity.customer_key as new_key
        from (
            select distinct identity_record_key, customer_key from {{ this }}
            where identity_record_key is not null
            {%- if changed_customers_scoped() and not identity_changed_every_customer() %}
              and (customer_key in ({{ changed }})
                   or (customer_key is null
                       and identity_record_key in (select record_key from {{ identity }} where customer_key in ({{ changed }}))))
            {%- endif %}
        ) as built
        left join {{ identity }} as identity on built.identity_record_key = identity.record_key
        where built.customer_key is distinct from identity.customer_key;
        insert into main.dbt_changed_customers
        select old_key from _rekeyed where old_key is not null
        union
        select new_key from _rekeyed where new_key is not null;
        update {{ this }} as built set customer_key = _rekeyed.new_key
        from _rekeyed
        where built.identity_record_key = _rekeyed.identity_record_key;
        drop table _rekeyed
    {%- endif -%}
{%- endmacro %}

{% macro customer_360_config() -%}
    {%- if target.type != 'duckdb' %}{{ return({'materialized': 'table'}) }}{% endif -%}
    {{- return({
        'materialized': 'incremental', 'incremental_strategy': 'delete+insert', 'unique_key': 'customer_key',
        'on_schema_change': 'fail', 'post_hook': "{{ customer_360_consumed() }}",
    }) }}
{%- endmacro %}

{#- Whether this build rebuilds only the customers listed: an incremental build, and no NULL in the list. -#}
{% macro changed_customers_scoped() -%}
    {%- if not is_incremental() -%}
        {{ return(false) }}
    {%- endif -%}
    {%- if not execute -%}
        {{ return(true) }}
    {%- endif -%}
    {{ return(not lists_every_customer('main.dbt_changed_customers')) }}
{%- endmacro %}

{#- Whether the identity map noted every customer (a NULL: built whole, or its list new). -#}
{% macro identity_changed_every_customer() -%}
    {%- if not execute -%}
        {{ return(false) }}
    {%- endif -%}
    {{ return(lists_every_customer('main.dbt_identity_changed_customers')) }}
{%- endmacro %}

{#- Whether a list of customers holds a NULL (every customer). -#}
{% macro lists_every_customer(list) -%}
    {%- set every = run_query('select count(*) from ' ~ list ~ ' where customer_key is null') -%}
    {{ return(every.columns[0].values()[0] > 0) }}
{%- endmacro %}

{#- Post-hook: customers no longer current leave; the lists were read. -#}
{% macro customer_360_consumed() -%}
    {%- if is_incremental() %}
    delete from {{ this }} where customer_key not in (select customer_key from {{ ref('dim_customer') }} where is_current);
    {%- endif %}
    delete from main.dbt_changed_customers;
    delete from main.dbt_identity_changed_customers
{%- endmacro %}

{#- dim_customer on DuckDB: every version of the customers noted, and of those with a profile version
    loaded since the table was last built, is deleted and built again (strategy append). The scope
    is fixed in main.dbt_customer_scope before the model runs, since facts of other threads may
    still note customers; a NULL in it means every customer. On Spark a table, rebuilt each run. -#}
{% macro dim_customer_config() -%}
    {%- if target.type != 'duckdb' %}{{ return({'materialized': 'table'}) }}{% endif -%}
    {{- return({
        'materialized': 'incremental', 'incremental_strategy': 'append', 'on_schema_change': 'fail',
        'pre_hook': "{{ dim_customer_scope() }}",
        'post_hook': "{{ dim_customer_built() }}",
    }) }}
{%- endmacro %}

{#- Pre-hook: the customers rebuilt, noted for customer_360 too; their versions leave. -#}
{% macro dim_customer_scope() -%}
    {%- if is_incremental() -%}
    create or replace table main.dbt_customer_scope as {{ changed_customers_so_far(this) }};
    insert into main.dbt_changed_customers select customer_key from main.dbt_customer_scope where customer_key is not null;
    delete from {{ this }} where {{ in_customer_scope('customer_key') }}
    {%- endif -%}
{%- endmacro %}

{#- The customers noted so far in this run, and those with a profile version loaded since
    `dim_customer` (the table, built or not yet built in this run) was built: a query. -#}
{% macro changed_customers_so_far(dim_customer) -%}
    select customer_key from main.dbt_changed_customers
    union
    select identity.customer_key
    from {{ ref('stg_customers__profiles') }} as profiles
    inner join {{ ref('customer_identity_map') }} as identity on identity.record_key = concat('profile:', profiles.customer_ref)
    where profiles.source_loaded_at > (
        select coalesce(max(source_loaded_at), cast('1900-01-01' as timestamp)) from {{ dim_customer }}
    )
{%- endmacro %}

{#- The customers a daily run's tests weigh: None when they weigh every customer (tests_every_row,
    no dim_customer yet, or a NULL noted: a table built whole), else the query above. The
    giant-customer alarm runs after the identity map, which noted the keys its rebuilt records left
    or took, and before dim_customer: a customer grows in records only through the map, in names
    only with a new profile version. A customer-key relationships test runs after its model and
    the parent, which noted every key they took or dropped (`with_profiles` false: dim_customer,
    built, noted those; and a generic test cannot declare the refs of the profiles' part). -#}
{% macro changed_customers_scope(with_profiles=true) -%}
    {%- if tests_every_row() -%}{{ return(none) }}{%- endif -%}
    {%- set dim_customer = adapter.get_relation(database=target.database, schema='marts', identifier='dim_customer') -%}
    {%- if dim_customer is none -%}{{ return(none) }}{%- endif -%}
    {%- if lists_every_customer('main.dbt_changed_customers') -%}{{ return(none) }}{%- endif -%}
    {#- A test that runs after dim_customer finds its profile-changed customers noted already. -#}
    {{ return(changed_customers_so_far(dim_customer) if with_profiles else 'select customer_key from main.dbt_changed_customers') }}
{%- endmacro %}

{#- Post-hook: a build of every customer notes a NULL (customer_360 then rebuilds every customer). -#}
{% macro dim_customer_built() -%}
    {%- if not is_incremental() -%}
    insert into main.dbt_changed_customers values (null);
    {%- endif %}
    drop table if exists main.dbt_customer_scope
{%- endmacro %}

{#- Whether a customer is in an incremental build's scope, a list of customers fixed before the
    model ran (dim_customer's above; fct_campaign_contacts' in macros/campaign_contacts.sql). -#}
{% macro in_customer_scope(column, scope='main.dbt_customer_scope') -%}
    ({{ column }} in (select customer_key from {{ scope }})
     or exists (select 1 from {{ scope }} where customer_key is null))
{%- endmacro %}
