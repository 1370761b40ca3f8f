{# Schemas are named exactly staging / intermediate / marts / ml (not main_staging), so analysts
   type marts.fct_order_lines. A model without a schema goes to the target's schema. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}
