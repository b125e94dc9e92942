"""The decision, one path (`gate`), each step once and in this order: `facts` gathers what a run left (one
`RunFacts`, by one function), `decide` concludes (pure) and shapes the record, `store` records it once, `apply`
writes the registry under the champion `lease` (compare-and-swap), `announce` tells people (outbox, SNS).
Beside them: `comparison` (paired tests, trivial answers), `lineage` (would this run reproduce a judged model),
`registry` (MLflow, signed with the connection).

Inside, imports point down: gate > facts, apply, announce > store, lease, registry, lineage > decide > comparison.
May import: `settings`, `aws`, `dataset`, `training`, `rules`, `reports` (never `airflow`, `demo`, `cli`).
"""
