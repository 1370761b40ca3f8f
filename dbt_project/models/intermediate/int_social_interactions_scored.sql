-- Each social interaction with a lexicon sentiment: the sum of the polarities of the lexicon terms
-- its text contains (seeds/sentiment_lexicon.csv). Likes and shares without text are unknown (NULL).
-- Stored, not a view: the match of every text against every term ran twice, for the key's test
-- and for fct_interactions.
-- Incremental by interaction, as a text's score is its own: a run scores only the staging rows not
-- scored as they now are (a new key, a re-delivery, an older delivery kept when a newer one left
-- raw), and the post-hook drops the interactions staging no longer holds. A changed lexicon needs a
-- full refresh. On Spark (no delete by key without Delta or Iceberg) a table, rebuilt each run.
{{ config(
    materialized=('incremental' if target.type == 'duckdb' else 'table'),
    incremental_strategy='delete+insert',
    unique_key='interaction_key',
    on_schema_change='fail',
    post_hook="{{ delete_keys_gone_from('interaction_key', ref('stg_social__interactions')) }}",
) }}
with

staged as (
    select * from {{ ref('stg_social__interactions') }}
),

lexicon as (
    select * from {{ ref('sentiment_lexicon') }}
),

interactions as (
    select staged.* from staged
    {%- if is_incremental() %}
    {{ anti_join() }} {{ this }} as scored
        on staged.interaction_key = scored.interaction_key
        and staged.source_file = scored.source_file
        and staged.source_row_number = scored.source_row_number
        and staged.source_loaded_at = scored.source_loaded_at
    {%- endif %}
),

scores as (
    select
        interactions.interaction_key,
        cast(sum(lexicon.polarity) as integer) as sentiment_score
    from interactions
    inner join lexicon on {{ dbt.position('lexicon.term', 'lower(interactions.interaction_text)') }} > 0
    group by interactions.interaction_key
),

final as (
    select
        interactions.*,
        case
            when interactions.interaction_text is null then cast(null as integer)
            else coalesce(scores.sentiment_score, 0)
        end as sentiment_score,
        case
            when interactions.interaction_text is null then cast(null as {{ dbt.type_string() }})
            when scores.sentiment_score > 0 then 'positive'
            when scores.sentiment_score < 0 then 'negative'
            else 'neutral'
        end as sentiment
    from interactions
    left join scores on interactions.interaction_key = scores.interaction_key
)

select * from final
