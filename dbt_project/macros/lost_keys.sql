{#- The keys a fact lost rows of, for the fact summed from it by key, on DuckDB: in
    main.dbt_lost_keys (parent, key). A row loaded again carries a newer source_loaded_at, which the
    child finds (keys_loaded_since); a row that left does not, and an order can keep other rows of
    other days (a line synced late on the next day). So the day-rebuilt order lines note the order
    keys of the lines they dropped (`lost_keys` of increments_by_day); the orders sum those keys
    again, delete those that have no line left, and note them in turn for the payments
    (`notes_lost_keys` of increments_by_key); each child then removes its parent's notes. A child
    skipped or failed leaves them for its next run. One child per parent reads a parent's notes. -#}

{#- on-run-start: the notes, before models of two threads would both create them. -#}
{% macro create_lost_keys() -%}
    {%- if target.type == 'duckdb' -%}
        create table if not exists main.dbt_lost_keys (parent varchar, key varchar)
    {%- endif -%}
{%- endmacro %}

{#- In the delete+insert of a day-rebuilt fact: the keys (lost_keys.key) of the rows of the days
    replaced whose row id (lost_keys.row) the new rows do not hold. -#}
{% macro note_lost_keys(target, source, unique_key, lost_keys) -%}
    insert into main.dbt_lost_keys
    select distinct '{{ target.identifier }}', built.{{ lost_keys.key }} from {{ target }} as built
    where (built.{{ unique_key }}) in (select ({{ unique_key }}) from {{ source }})
      and built.{{ lost_keys.key }} is not null
      and not exists (select 1 from {{ source }} as new where new.{{ lost_keys.row }} = built.{{ lost_keys.row }});
{%- endmacro %}

{#- The parent's noted keys, as a query. -#}
{% macro lost_keys_of(parent) -%}
    select key from main.dbt_lost_keys where parent = '{{ parent.identifier }}'
{%- endmacro %}

{#- Post-hook of a fact summed by key: rows of the keys its parent lost rows of that the parent no
    longer holds leave, their customers noted; the keys are noted for this model's own child if it
    has one (`notes`); the parent's notes are removed. Reads the parent's rows of those keys only. -#}
{% macro consume_lost_keys(parent_name, key, notes) -%}
    {%- set parent = ref(parent_name) -%}
    {%- if is_incremental() %}
    create or replace temp table _lost as select distinct key from ({{ lost_keys_of(parent) }}) as noted;
    create or replace temp table _gone as
    select built.{{ key }}, built.customer_key from {{ this }} as built
    {{ semi_join() }} _lost on built.{{ key }} = _lost.key
    where built.{{ key }} not in (
        select kept.{{ key }} from {{ parent }} as kept {{ semi_join() }} _lost on kept.{{ key }} = _lost.key
    );
    insert into main.dbt_changed_customers select distinct customer_key from _gone where customer_key is not null;
    delete from {{ this }} where {{ key }} in (select {{ key }} from _gone);
    {%- if notes %}
    insert into main.dbt_lost_keys select '{{ this.identifier }}', key from _lost;
    {%- endif %}
    drop table _gone;
    drop table _lost;
    {%- endif %}
    delete from main.dbt_lost_keys where parent = '{{ parent.identifier }}'
{%- endmacro %}
