-- Each social interaction with a lexicon sentiment: the sum of the polarities of the lexicon terms
-- its text contains (seeds/sentiment_lexicon.csv). Likes and shares without text are unknown (NULL).
-- A table, not a view: the match of every text against every term ran twice, for the key's test
-- and for fct_interactions.
{{ config(materialized='table') }}
with

interactions as (
    select * from {{ ref('stg_social__interactions') }}
),

lexicon as (
    select * from {{ ref('sentiment_lexicon') }}
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
