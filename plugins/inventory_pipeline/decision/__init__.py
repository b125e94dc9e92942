"""The decision, one path: `gate` gathers what a run left (one `RunFacts`), `decide` concludes (pure), `store`
records it once, `apply` writes the registry under the champion `lease` (compare-and-swap), `outbox` announces.
Beside them: `comparison` (paired tests, trivial answers), `lineage` (would this run reproduce a judged model),
`registry` (MLflow, signed with the connection).

May import: `settings`, `aws`, `dataset`, `training`, `rules`, `reports` (never `airflow`, `demo`, `cli`).
"""
