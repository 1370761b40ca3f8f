{#- Daily runs check the rows they loaded; a full refresh and the weekly full-test day check every
    row. On a model with `source_loaded_at` (the staging tables, the sessionized events, the facts):
    - a not_null or accepted_values test sees only the rows loaded since that model's last build in
      which every such test of it ran and passed: older rows passed them then, and a value of an old
      row does not change without a new load;
    - a unique or unique_combination test sees only the rows whose key a row loaded since holds: a
      new duplicate has a new row in it.
    - a relationships test on a customer key sees those rows and the rows of the customers this run
      changed (macro changed_customers_scope): a parent loses a key only with a customer it
      rebuilt, re-keyed or erased, and a re-keyed row keeps its load time but notes both keys.
    - a singular test reconciling a model incremental by date with raw (web purchases, store lines)
      sees the dates holding that model's rows loaded since, the dates the run rebuilt, on both
      sides (macro dates_loaded_since_tested).
    The other relationships tests and the singular tests read every row on every run: a new row
    elsewhere can break them; except the giant-customer alarm, which reads the customers this run
    changed. The mark is kept per model, since a build runs in several dbt invocations (one per
    step around identity) and each tests its own models. DuckDB only: on Spark every test reads
    every row. -#}

{#- on-run-end: each model whose scoped tests all ran in this invocation and passed has been
    checked through its newest load. -#}
{% macro record_tested_loads(results) -%}
    {%- if execute and target.type == 'duckdb' -%}
        {%- set outcome = {} -%}
        {%- for result in results if result.node.resource_type == 'test' -%}
            {%- do outcome.update({result.node.unique_id: result.status}) -%}
        {%- endfor -%}
        {%- set scoped_tests = {} -%}  {#- model -> the outcomes of its scoped tests (None: not run) -#}
        {%- for test in graph.nodes.values() if test.resource_type == 'test' -%}
            {%- set scoped_by = test.config.meta.get('scoped_by_loads_of') -%}
            {%- if test.attached_node and is_scoped_test(test.test_metadata) -%}
                {%- do scoped_tests.setdefault(test.attached_node, []).append(outcome.get(test.unique_id)) -%}
            {%- elif scoped_by -%}  {#- a singular test reading the dates loaded since (dates_loaded_since_tested) -#}
                {%- do scoped_tests.setdefault('model.' ~ project_name ~ '.' ~ scoped_by, []).append(outcome.get(test.unique_id)) -%}
            {%- endif -%}
        {%- endfor -%}
        {%- set marks = [] -%}
        {%- for node in graph.nodes.values() if node.resource_type == 'model' -%}
            {%- set scoped = scoped_tests.get(node.unique_id, []) -%}
            {%- set built = adapter.get_relation(database=node.database, schema=node.schema, identifier=node.alias) -%}
            {%- if scoped and scoped | reject('equalto', 'pass') | list | length == 0 and built is not none
                  and 'source_loaded_at' in (adapter.get_columns_in_relation(built) | map(attribute='name') | list) -%}
                {%- do marks.append("select '" ~ node.schema ~ "." ~ node.alias ~ "' as relation, max(source_loaded_at) as tested_through from " ~ built) -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if marks -%}
            {#- Run here and committed: reading the columns above opened a transaction on the hooks'
                connection, which dbt rolls back after them. -#}
            {%- call statement('record_tested_loads') -%}
                create or replace table main.dbt_tested_loads as
                select relation, cast(tested_through as timestamp with time zone) as tested_through
                from ({{ marks | join(' union all ') }}) as marked
                union all  {#- the table exists, per model (create_tested_loads) #}
                select relation, tested_through from main.dbt_tested_loads
                where relation not in ({% for m in marks %}'{{ m.split("'")[1] }}'{{ ', ' if not loop.last }}{% endfor %})
            {%- endcall -%}
            {%- do adapter.commit() -%}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{#- dbt's own macro, with the scope above as the `where` of a test that has none. -#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- if not where and checks_only_loaded_rows(relation) -%}
        {%- set where = loaded_since_tested(relation) -%}
        {%- set key = tested_key() -%}
        {%- set test = model.get('test_metadata') or {} -%}
        {%- if key -%}  {#- every row holding a key that a loaded row holds -#}
            {%- set where = "(" ~ key ~ ") in (select " ~ key ~ " from " ~ relation ~ " where " ~ where ~ ")" -%}
        {%- elif test.get('name') == 'relationships' -%}  {#- and the rows of the customers changed -#}
            {%- set changed = changed_customers_scope(with_profiles=false) -%}
            {%- set where = '' if changed is none else
                "(" ~ where ~ ") or " ~ test.kwargs.column_name ~ " in (" ~ changed ~ ")" -%}
        {%- endif -%}
    {%- endif -%}
    {%- if where -%}
        (select * from {{ relation }} where {{ where }}) dbt_subquery
    {%- else -%}
        {{ relation }}
    {%- endif -%}
{%- endmacro %}

{#- The rows of `relation` loaded since its mark (the condition, on its own columns). -#}
{% macro loaded_since_tested(relation) -%}
    {{ return("source_loaded_at > coalesce((select max(tested_through) from main.dbt_tested_loads where relation = '"
              ~ relation.schema ~ "." ~ relation.identifier ~ "'), cast('1900-01-01' as timestamp with time zone))") }}
{%- endmacro %}

{#- For a singular test that reconciles a model incremental by date with its raw rows: on a daily
    run, the dates holding rows of `relation` loaded since its mark (a query of `date_column`), the
    dates that run rebuilt; none (every date) on a run that tests every row. Such a test declares
    the model in its config, meta `scoped_by_loads_of`, so that the model's mark moves only when
    it passed too. -#}
{% macro dates_loaded_since_tested(relation, date_column) -%}
    {%- if tests_every_row() -%}
        {{ return(none) }}
    {%- endif -%}
    {{ return("select distinct " ~ date_column ~ " from " ~ relation ~ " where " ~ loaded_since_tested(relation)) }}
{%- endmacro %}

{#- on-run-start: the mark table, so that a scoped test reads it without asking the catalog first
    (three catalog queries per test were a tenth of a daily build's test time); an empty table marks
    nothing, so the first build tests every row. A table of one mark for all (an older version's)
    goes: its mark was not kept per model. -#}
{% macro create_tested_loads() -%}
    {%- if execute and target.type == 'duckdb' -%}
        {%- set kept = adapter.get_relation(database=target.database, schema='main', identifier='dbt_tested_loads') -%}
        {#- Run here and committed, as record_tested_loads below: the catalog lookups opened a transaction. -#}
        {%- call statement('create_tested_loads') -%}
            {%- if kept is not none and not is_tested_per_model(kept) %}drop table {{ kept }};{% endif %}
            create table if not exists main.dbt_tested_loads (relation varchar, tested_through timestamp with time zone)
        {%- endcall -%}
        {%- do adapter.commit() -%}
    {%- endif -%}
{%- endmacro %}

{#- Whether this run's data tests read every row: a full refresh, the weekly full-test day, Spark. -#}
{% macro tests_every_row() -%}
    {{ return(not execute or target.type != 'duckdb' or flags.FULL_REFRESH
              or run_started_at.isoweekday() == var('full_tests_weekday')) }}
{%- endmacro %}

{% macro checks_only_loaded_rows(relation) -%}
    {%- if tests_every_row() or not is_scoped_test(model.get('test_metadata')) -%}
        {{ return(false) }}
    {%- endif -%}
    {#- The tested model's YAML, where it documents the column; else the catalog. -#}
    {%- set attached = graph.nodes.get(model.get('attached_node') or '') -%}
    {%- if attached and 'source_loaded_at' in attached.get('columns', {}) -%}
        {{ return(true) }}
    {%- endif -%}
    {{ return('source_loaded_at' in (adapter.get_columns_in_relation(relation) | map(attribute='name') | list)) }}
{%- endmacro %}

{#- A mark table of one mark per model (one from before, a single mark for all, is replaced). -#}
{% macro is_tested_per_model(tested) -%}
    {{ return('relation' in (adapter.get_columns_in_relation(tested) | map(attribute='name') | list)) }}
{%- endmacro %}

{#- Whether a test (its test_metadata) reads only the rows a daily run may have changed. -#}
{% macro is_scoped_test(test) -%}
    {%- set test = test or {} -%}
    {{ return(test.get('name') in ['not_null', 'accepted_values', 'unique', 'unique_combination']
              or (test.get('name') == 'relationships' and test.kwargs.get('field') == 'customer_key')) }}
{%- endmacro %}

{#- The columns a key test (unique, unique_combination) groups by, comma-separated; '' for a value test. -#}
{% macro tested_key() -%}
    {%- set test = model.get('test_metadata') or {} -%}
    {%- if test.get('name') == 'unique' -%}
        {{ return(test.kwargs.column_name) }}
    {%- elif test.get('name') == 'unique_combination' -%}
        {{ return(test.kwargs.columns | join(', ')) }}
    {%- endif -%}
    {{ return('') }}
{%- endmacro %}
