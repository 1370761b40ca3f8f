{#- The customers whose facts changed since customer_360 last read them, on DuckDB: the daily facts
    (increments_by_day) note the customer keys of the rows they replace and of the rows they insert
    in main.dbt_changed_customers; a fact built whole notes a NULL, which means every customer.
    customer_360 rebuilds the customers noted (and those whose dim_customer attributes changed),
    then empties the list. The list is created at the start of every dbt invocation. -#}

{#- on-run-start: the list, before models of two threads would both create it (a DuckDB write-write conflict). -#}
{% macro create_changed_customers() -%}
    {%- if target.type == 'duckdb' -%}
        create table if not exists main.dbt_changed_customers (customer_key varchar)
    {%- endif -%}
{%- endmacro %}

{#- delete+insert by the unique key (the date), noting the customers before and after. -#}
{% macro get_incremental_customer_logged_delete_insert_sql(arg_dict) -%}
    {%- set target, source, key = arg_dict['target_relation'], arg_dict['temp_relation'], arg_dict['unique_key'] -%}
    insert into main.dbt_changed_customers
    select customer_key from {{ target }}
    where ({{ key }}) in (select ({{ key }}) from {{ source }}) and customer_key is not null
    union
    select customer_key from {{ source }} where customer_key is not null;
    {{ get_delete_insert_merge_sql(target, source, key, arg_dict['dest_columns'], arg_dict['incremental_predicates']) }}
{%- endmacro %}

{#- Post-hook of the daily facts: a fact built whole may have changed any customer; on the
    incremental path, the rows whose record the identity map now gives another key (or none) take
    it, and both keys are noted (macros/incremental.sql). -#}
{% macro rekey_rows() -%}
    {%- if not is_incremental() -%}
        insert into main.dbt_changed_customers values (null)
    {%- else -%}
        {%- set identity = ref('customer_identity_map') -%}
        create or replace temp table _rekeyed as
        select built.identity_record_key, built.customer_key as old_key, identity.customer_key as new_key
        from (select distinct identity_record_key, customer_key from {{ this }} where identity_record_key is not null) as built
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
{% macro customer_360_scoped() -%}
    {%- if not is_incremental() -%}
        {{ return(false) }}
    {%- endif -%}
    {%- if not execute -%}
        {{ return(true) }}
    {%- endif -%}
    {%- set every = run_query('select count(*) from main.dbt_changed_customers where customer_key is null') -%}
    {{ return(every.columns[0].values()[0] == 0) }}
{%- endmacro %}

{#- Post-hook: customers no longer current leave; the list was read. -#}
{% macro customer_360_consumed() -%}
    {%- if is_incremental() %}
    delete from {{ this }} where customer_key not in (select customer_key from {{ ref('dim_customer') }} where is_current);
    {%- endif %}
    delete from main.dbt_changed_customers
{%- endmacro %}
