"""The Airflow adapters: the provider's operators and sensors subclassed (`operators`, `sensors`), the deferrable
trigger (`triggers`), extra links and the report route (`links`, `plugin`), failure callbacks (`callbacks`), the
functions the DAG's tasks call (`tasks`), and `airflow dags test` / run summaries for the demo and the tests
(`runner`, `run_summary`). The DAG file imports only this package.

May import: every other package of the project except `demo` and `cli` (the top layer); nothing imports it but
those, the DAG file and `plugins/inventory_plugin.py`. Note: `import airflow` inside it is the Airflow library
(absolute imports); the project's package is always `inventory_pipeline.airflow`.
"""
