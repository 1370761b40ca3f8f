{#- Helpers of int_identifier_quality: the contact-value guard of the identity graph (docs/identity.md). -#}

{#- A pattern no real contact has: one digit or letter six times in a row (13900000000,
    777777@163.com) or a counting run (13912345678). A prior that lowers the evidence needed,
    never a verdict by itself: someone may really own a lucky number. -#}
{% macro looks_like_placeholder(expr) -%}
    (
    {%- for c in '0123456789abcdefghijklmnopqrstuvwxyz' %}
        {{ dbt.position("'" ~ c * 6 ~ "'", expr) }} > 0 or
    {%- endfor %}
    {%- for run in ['12345678', '23456789', '34567890', '98765432', '87654321', '76543210', 'abcdef'] %}
        {{ dbt.position("'" ~ run ~ "'", expr) }} > 0{{ ' or' if not loop.last }}
    {%- endfor %}
    )
{%- endmacro %}

{#- The p-quantile (0..1) of a numeric aggregate, in each engine's spelling. -#}
{% macro quantile(expr, p) -%}
    {{ return(adapter.dispatch('quantile', 'crm_warehouse')(expr, p)) }}
{%- endmacro %}
{% macro default__quantile(expr, p) -%}percentile_approx({{ expr }}, {{ p }}){%- endmacro %}
{% macro duckdb__quantile(expr, p) -%}quantile_cont({{ expr }}, {{ p }}){%- endmacro %}

{#- A list var as a SQL list of strings: ('a', 'b'), or (NULL) when empty, so `in` stays valid. -#}
{% macro string_list(values) -%}
    ({%- for v in values %}'{{ v | replace("'", "''") }}'{{ ', ' if not loop.last }}{%- else %}null{%- endfor %})
{%- endmacro %}
