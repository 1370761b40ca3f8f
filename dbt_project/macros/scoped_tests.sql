{#- Daily runs check the rows they loaded; a full refresh and the weekly full-test day check every
    row. A not_null or accepted_values test on a model with `source_loaded_at` (the staging tables,
    the sessionized events, the facts) sees only the rows loaded since the last build that ran
    every data test and passed: older rows passed them then, and a value of an old row does not
    change without a new load. Tests across rows (unique, relationships, the singular tests) read
    every row on every run: a new row can break them together with an old one. -#}

{#- on-run-end: after a build that ran every data test and none failed, every row the staging
    tables hold has been checked. -#}
{% macro record_tested_loads(results) -%}
    {%- if execute -%}
        {%- set tests_run = results | selectattr('node.resource_type', 'equalto', 'test') | list -%}
        {%- set tests_all = graph.nodes.values() | selectattr('resource_type', 'equalto', 'test') | list -%}
        {%- set failed = results | selectattr('status', 'in', ['error', 'fail', 'skipped']) | list -%}
        {%- set staged = [] -%}
        {%- for node in graph.nodes.values() if node.resource_type == 'model' and node.fqn[1] == 'staging' -%}
            {%- set built = adapter.get_relation(database=node.database, schema=node.schema, identifier=node.alias) -%}
            {%- if built is not none -%}
                {%- do staged.append('select max(source_loaded_at) as loaded_at from ' ~ built) -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if tests_run | length == tests_all | length and not failed and staged -%}
            create or replace table main.dbt_tested_loads as
            select cast((select max(loaded_at) from ({{ staged | join(' union all ') }}) as staged)
                        as timestamp with time zone) as tested_through
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{#- dbt's own macro, with the scope above as the `where` of a test that has none. -#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- if not where and checks_only_loaded_rows(relation) -%}
        {%- set where = "source_loaded_at > (select max(tested_through) from main.dbt_tested_loads)" -%}
    {%- endif -%}
    {%- if where -%}
        (select * from {{ relation }} where {{ where }}) dbt_subquery
    {%- else -%}
        {{ relation }}
    {%- endif -%}
{%- endmacro %}

{% macro checks_only_loaded_rows(relation) -%}
    {%- set test = model.get('test_metadata') or {} -%}
    {%- if flags.FULL_REFRESH or run_started_at.isoweekday() == var('full_tests_weekday')
          or test.get('name') not in ('not_null', 'accepted_values') -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set tested = adapter.get_relation(database=relation.database, schema='main', identifier='dbt_tested_loads') -%}
    {{ return(tested is not none
              and 'source_loaded_at' in (adapter.get_columns_in_relation(relation) | map(attribute='name') | list)) }}
{%- endmacro %}
