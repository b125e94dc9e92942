"""AWS plumbing every layer above may use: clients built from the Airflow connection or explicit endpoints
(`clients`), what an AWS error means (`errors`), `s3://` URIs and the project's key layout (`s3_paths`), and the
opt-in recorder of every call for the least-privilege test (`call_recorder`).

May import: `settings` and nothing else of the project (it is the bottom layer besides the configuration).
"""
