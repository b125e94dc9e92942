"""The DAG run the reliability tests share: `airflow dags test` on a local stack of its own, with every AWS call
recorded (who made it, with which access key) and distinctive dummy credentials in `aws_default`.

The stack is this module's own (not the session's `local_stack`): its servers and the SageMaker runner must
inherit the recording environment when they start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from inventory_pipeline.airflow.run_summary import read_latest_run
from inventory_pipeline.airflow.runner import DagTestResult, airflow_env, dags_test, db_migrate
from inventory_pipeline.aws.call_recorder import PRINCIPAL_ENV, RECORD_ENV
from inventory_pipeline.aws.clients import make_client
from inventory_pipeline.dataset.seed import seed_synthetic
from inventory_pipeline.local_aws.stack import (
    DEFAULT_REGION,
    LOCAL_ACCESS_KEY,
    LOCAL_SECRET_KEY,
    MLFLOW_ARTIFACTS_ENV,
    LocalStack,
)

SITE_DIR = Path(__file__).resolve().parent / "recording_site"
BUCKET, PREFIX, SOURCE_BUCKET = "reliability-project", "abid", "reliability-source"
ACCOUNT_ID = "000000000000"  # the local SageMaker server's account
# Distinctive dummy credentials of the `aws_default` connection: they must never show up in any output.
CONN_ACCESS_KEY = "AKIAINVENTORYTEST01"
CONN_SECRET = "inventory-secret-DO-NOT-LOG-4f7a"
CONN_SESSION_TOKEN = "inventory-session-token-DO-NOT-LOG-9c2e"
# The Airflow worker's ambient credentials (as an instance role would be): a task that used them instead of
# the connection would bypass the connection's policy, and the recorded access key shows it.
WORKER_ACCESS_KEY, WORKER_SECRET = "AKIAWORKERAMBIENT01", "worker-ambient-secret-DO-NOT-LOG-77b1"
# self_hosted needs a superset of managed's grants (the DAG's rule engine reads the job's output and writes
# rule-output; the training processes upload their own debug output), so one run covers both modes.
RULES_MODE = "self_hosted"
PRETRAINED_PREFIX = f"{PREFIX}/pretrained/0123456789abcdef/"
TRACKING_SERVER_NAME = "inventory-tracking"
TRACKING_SERVER_ARN = f"arn:aws:sagemaker:{DEFAULT_REGION}:{ACCOUNT_ID}:mlflow-tracking-server/{TRACKING_SERVER_NAME}"


@dataclass
class RecordedRun:
    result: DagTestResult
    summary: dict[str, Any]
    home: Path
    stack_dir: Path
    calls_path: Path
    clients: dict[str, Any]
    calls_in_run: int  # lines of calls_path when the DAG run ended: later tests' calls are not the run's

    @property
    def job_name(self) -> str:
        return self.summary["xcom"]["train"]["Training"]["TrainingJobName"]

    def calls(self) -> list[dict[str, Any]]:
        """The DAG run's calls."""
        return self.all_calls()[: self.calls_in_run]

    def all_calls(self) -> list[dict[str, Any]]:
        """Every call recorded on this stack, those of tests run after the DAG included."""
        return [json.loads(line) for line in self.calls_path.read_text().splitlines() if line.strip()]


def _connection(stack: LocalStack) -> dict[str, Any]:
    conn = dict(stack.airflow_conn)
    conn.update(login=CONN_ACCESS_KEY, password=CONN_SECRET)
    conn["extra"] = {**conn["extra"], "aws_session_token": CONN_SESSION_TOKEN}
    return conn


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordedRun]:
    root = tmp_path_factory.mktemp("reliability")
    calls_path, home, stack_dir = root / "aws-calls.jsonl", root / "airflow-home", root / "stack"
    pythonpath = os.pathsep.join(p for p in (str(SITE_DIR), os.environ.get("PYTHONPATH", "")) if p)
    recording = {RECORD_ENV: str(calls_path), "PYTHONPATH": pythonpath}
    # MLflow as a SageMaker managed tracking server: s3:// artifact URIs the client writes itself.
    with mock.patch.dict(os.environ, {**recording, MLFLOW_ARTIFACTS_ENV: "s3"}):  # the servers inherit it
        stack = LocalStack(stack_dir).start()
    try:
        creds = {"aws_access_key_id": LOCAL_ACCESS_KEY, "aws_secret_access_key": LOCAL_SECRET_KEY}
        clients = {
            svc: make_client(svc, stack.endpoints[svc], stack.region, **creds) for svc in ("s3", "sagemaker", "logs")
        }
        clients["s3"].create_bucket(Bucket=BUCKET)
        seed_synthetic(clients["s3"], SOURCE_BUCKET, images=200, seed=11)
        # A `pretrained` channel (no checkpoint in it: small_cnn has no pretrained weights), so both policies'
        # grants on the prefix `inventory-pipeline pretrained upload` writes are exercised.
        clients["s3"].put_object(Bucket=BUCKET, Key=f"{PRETRAINED_PREFIX}README.txt", Body=b"no checkpoint here")
        env = airflow_env(
            home,
            {
                **stack.env(),
                **recording,
                PRINCIPAL_ENV: "airflow",
                "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(_connection(stack)),
                "AWS_ACCESS_KEY_ID": WORKER_ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": WORKER_SECRET,
                "INVENTORY_BUCKET": BUCKET,
                "INVENTORY_PREFIX": PREFIX,
                "INVENTORY_POKE_INTERVAL_S": "3",
                "INVENTORY_REPORT_DIR": str(home / "reports"),
                "INVENTORY_PRETRAINED_S3_URI": f"s3://{BUCKET}/{PRETRAINED_PREFIX}",
                # A SageMaker MLflow tracking server ARN, which the sagemaker-mlflow plugin resolves to the local one.
                "INVENTORY_TRACKING_URI": TRACKING_SERVER_ARN,
                "SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT": stack.endpoints["mlflow"],
            },
        )
        db_migrate(env)
        conf = {
            "source_bucket": SOURCE_BUCKET,
            "file_list": f"s3://{SOURCE_BUCKET}/file_list.json",
            "model": "small_cnn",
            "epochs": 1,
            "instance_count": 1,
            "rules_mode": RULES_MODE,
        }
        result = dags_test(env, conf, log_path=home / "dags-test.log")
        summary = read_latest_run(env)
        calls_in_run = len([line for line in calls_path.read_text().splitlines() if line.strip()])
        yield RecordedRun(
            result,
            summary,
            home,
            stack_dir,
            calls_path,
            clients,
            calls_in_run,
        )
    finally:
        stack.stop()
