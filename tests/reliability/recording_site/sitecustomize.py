"""Put on PYTHONPATH by the reliability tests: every Python process of their DAG run (Airflow, the local
stack's servers, the SageMaker runner, the training processes) records its AWS calls from its first line,
whichever boto3/botocore sessions it later creates. Inert unless INVENTORY_RECORD_AWS_CALLS is set."""

from inventory_pipeline.aws.call_recorder import install_from_env

install_from_env()
