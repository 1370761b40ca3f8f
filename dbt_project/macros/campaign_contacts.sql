{#- The campaign contacts on DuckDB, incremental by contact and by customer; on Spark tables, rebuilt
    each run. A contact's resolution changes only when the contact is loaded again or the identity
    of a customer it names (or names after) changes, and the identity map notes both keys of every
    record it rebuilds (macros/changed_customers.sql); a campaign's response only when the contact
    or the customer's orders change, which fct_orders notes. -#}

{#- int_campaign_contacts_resolved: delete+insert by contact, noting the customers of the rows that
    change; the contacts no longer in staging (an erasure, a re-delivery without them) leave after. -#}
{% macro campaign_contacts_resolved_config() -%}
    {%- if target.type != 'duckdb' %}{{ return({'materialized': 'table'}) }}{% endif -%}
    {{- return({
        'materialized': 'incremental', 'incremental_strategy': 'customer_logged_delete_insert',
        'unique_key': 'campaign_contact_id', 'on_schema_change': 'fail',
        'post_hook': "{{ delete_keys_gone_from('campaign_contact_id', ref('stg_campaigns__contacts'), note_customers=true) }}",
    }) }}
{%- endmacro %}

{#- fct_campaign_contacts: every row of the customers noted so far (fixed in
    main.dbt_campaign_contacts_scope before the model runs, as facts of other threads may still note
    customers; a NULL means every customer) and every row without a customer is deleted and built
    again (strategy append). customer_360, which empties the list, runs after it. -#}
{% macro campaign_contacts_config() -%}
    {%- if target.type != 'duckdb' %}{{ return({'materialized': 'table'}) }}{% endif -%}
    {{- return({
        'materialized': 'incremental', 'incremental_strategy': 'append', 'on_schema_change': 'fail',
        'pre_hook': "{{ campaign_contacts_scope() }}",
        'post_hook': "drop table if exists main.dbt_campaign_contacts_scope",
    }) }}
{%- endmacro %}

{% macro campaign_contacts_scope() -%}
    {%- if is_incremental() -%}
    create or replace table main.dbt_campaign_contacts_scope as select customer_key from main.dbt_changed_customers;
    delete from {{ this }} where customer_key is null or {{ in_campaign_contacts_scope('customer_key') }}
    {%- endif -%}
{%- endmacro %}

{% macro in_campaign_contacts_scope(column) -%}
    {{ in_customer_scope(column, 'main.dbt_campaign_contacts_scope') }}
{%- endmacro %}
