"""`make demo`: the weekly story on the embedded stack (`story`), its printed summary (`summary`), and the person
who answers approval requests through Airflow's REST API (`reviewer`, also used by the end-to-end tests).

May import: everything below it (`airflow`, `local_aws`, `decision`, ...); only `cli` is above it.
"""
