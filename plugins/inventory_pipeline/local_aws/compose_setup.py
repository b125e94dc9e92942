"""`docker compose --profile local`: point the compose deployment at its `local-aws` service, end to end.

Run once by the profile's `local-aws-setup` service, after `local-aws` answers and Airflow's database is
migrated. What `make demo` gives its own runs, the compose deployment gets from the same functions:
- the `aws_default` connection with every service's endpoint (`stack.airflow_connection`: S3, Logs,
  CloudWatch, SNS, SQS, SageMaker), written to Airflow's database;
- the deployment settings the embedded stack sets (`stack.client_env`: the tracking server, the decisions
  topic), plus a seeded source, as Airflow Variables: the settings read them at run time (Param > Variable >
  environment > default), so the profile changes nothing for a real-AWS deployment of the same file;
- the project bucket, the decisions topic and MLflow's artifact bucket (`stack.provision`), and a synthetic
  ABID-like source bucket (its file list) the first time.
Every step is idempotent: `docker compose --profile local up` may run it again.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from inventory_pipeline.local_aws.stack import (
    DEFAULT_REGION,
    LOCAL_ACCESS_KEY,
    LOCAL_SECRET_KEY,
    MLFLOW,
    MOTO,
    SAGEMAKER,
    airflow_connection,
    client_env,
    provision,
    wait_until_answers,
)

log = logging.getLogger(__name__)

HOST = "local-aws"  # the compose service running `local-stack up`
PORTS = {MOTO.name: 5000, SAGEMAKER.name: 5001, MLFLOW.name: 5002}  # its fixed ports (docker-compose.yaml)
SOURCE_BUCKET = "abid-synthetic-source"
SOURCE_IMAGES = 1500


def endpoints(host: str = HOST) -> dict[str, str]:
    """Each service's URL as the Airflow containers reach it."""
    return {svc: f"http://{host}:{PORTS[spec.name]}" for spec in (MOTO, SAGEMAKER, MLFLOW) for svc in spec.services}


def airflow_settings(topic_arn: str, host: str = HOST, region: str = DEFAULT_REGION) -> tuple[dict, dict[str, str]]:
    """(the `aws_default` connection, the Airflow Variables) for a deployment on the compose local stack."""
    urls = endpoints(host)
    env = client_env(urls, region, {"topic_arn": topic_arn})
    variables = {name: value for name, value in env.items() if name.startswith("INVENTORY_")}
    variables.pop("INVENTORY_S3_ENDPOINT", None)  # the connection carries every endpoint
    variables.pop("INVENTORY_ALLOW_LOCAL_FILE_LIST", None)  # a shared worker reads s3:// file lists only
    variables.update(INVENTORY_SOURCE_BUCKET=SOURCE_BUCKET, INVENTORY_FILE_LIST=f"s3://{SOURCE_BUCKET}/file_list.json")
    connection = airflow_connection({svc: url for svc, url in urls.items() if svc != "mlflow"}, region)
    return connection, variables


def _write_to_airflow(connection: dict[str, Any], variables: dict[str, str]) -> None:
    from airflow.models import Connection, Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id == "aws_default").delete()
        session.add(
            Connection(
                conn_id="aws_default",
                conn_type=connection["conn_type"],
                login=connection["login"],
                password=connection["password"],
                extra=json.dumps(connection["extra"]),
            )
        )
    for name, value in sorted(variables.items()):
        Variable.set(name, value)
        log.info("Variable %s = %s", name, value)


def main() -> int:
    import boto3

    from inventory_pipeline.dataset.seed import seed_synthetic

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    urls = endpoints(os.environ.get("INVENTORY_LOCAL_AWS_HOST", HOST))
    for url in (urls["s3"], urls["sagemaker"], urls["mlflow"]):
        wait_until_answers(url, timeout_s=300)
    provisioned = provision(urls, DEFAULT_REGION)
    creds = {"aws_access_key_id": LOCAL_ACCESS_KEY, "aws_secret_access_key": LOCAL_SECRET_KEY}
    s3 = boto3.client("s3", endpoint_url=urls["s3"], region_name=DEFAULT_REGION, **creds)
    bucket = os.environ.get("INVENTORY_BUCKET", "inventory-retraining")
    for name in (bucket, SOURCE_BUCKET):
        s3.create_bucket(Bucket=name)
    if "Contents" not in s3.list_objects_v2(Bucket=SOURCE_BUCKET, Prefix="file_list.json"):
        seeded = seed_synthetic(s3, SOURCE_BUCKET, images=SOURCE_IMAGES, seed=7)
        log.info("seeded s3://%s with %s synthetic photos", SOURCE_BUCKET, seeded.get("images", SOURCE_IMAGES))
    connection, variables = airflow_settings(provisioned["topic_arn"])
    _write_to_airflow(connection, variables)
    log.info("aws_default points at %s; project bucket s3://%s", ", ".join(sorted(set(urls.values()))), bucket)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
