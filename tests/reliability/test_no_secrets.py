"""No credential reaches any output of a run: after the recorded DAG run (conftest.py), whose `aws_default`
holds distinctive dummy credentials, search everything the run leaves behind for them: Airflow's home (the task
logs, which `dags test` writes to its output, dags-test.log, and logs/; the metadata DB with its XComs and
rendered fields; the report), the local stack's files (server and runner logs,
the job's working directories), every object in the project bucket, the job's CloudWatch log events, its
DescribeTrainingJob answer and the run summary's XCom values."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterator

import pytest
from dag_run_recording import BUCKET, CONN_ACCESS_KEY, CONN_SECRET, CONN_SESSION_TOKEN, WORKER_SECRET, RecordedRun

from inventory_pipeline.local_aws.runner.logs import LOG_GROUP
from inventory_pipeline.local_aws.stack import LOCAL_SECRET_KEY

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SECRETS = {
    "aws_default access key": CONN_ACCESS_KEY,
    "aws_default secret key (connection password)": CONN_SECRET,
    "aws_default session token": CONN_SESSION_TOKEN,
    "the worker's ambient secret key": WORKER_SECRET,
    "the execution role's secret key": LOCAL_SECRET_KEY,
}


def _readable(data: bytes) -> bytes:
    """Archives are searched inside too (model.tar.gz, output.tar.gz, sourcedir.tar.gz)."""
    if not data.startswith(b"\x1f\x8b"):
        return data
    try:
        data = gzip.decompress(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            return data + b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]
    except (OSError, EOFError, tarfile.TarError):
        return data


def _found(place: str, data: bytes) -> list[str]:
    data = _readable(data)
    return [f"{what} in {place}" for what, secret in SECRETS.items() if secret.encode() in data]


def _places(run: RecordedRun) -> Iterator[tuple[str, bytes]]:
    for root in (run.home, run.stack_dir):
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            yield str(path), path.read_bytes()
    s3, logs, sm = run.clients["s3"], run.clients["logs"], run.clients["sagemaker"]
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            yield f"s3://{BUCKET}/{obj['Key']}", s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
    for stream in logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=run.job_name)["logStreams"]:
        events = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream["logStreamName"], startFromHead=True)
        yield f"CloudWatch Logs {LOG_GROUP}/{stream['logStreamName']}", json.dumps(events["events"]).encode()
    described = sm.describe_training_job(TrainingJobName=run.job_name)
    yield "DescribeTrainingJob", json.dumps(described, default=str).encode()
    yield "run summary (XCom values)", json.dumps(run.summary, default=str).encode()


def test_the_run_left_something_to_search(recorded_run: RecordedRun) -> None:
    places = dict(_places(recorded_run))
    assert recorded_run.summary["state"] == "success", recorded_run.summary["tasks"]
    # The search is only as good as what it covers: task logs, the HTML report, the job's log events.
    assert b"task_id=parse_rule_reports" in places[str(recorded_run.home / "dags-test.log")]
    assert any(p.endswith("report.html") for p in places)
    assert any(p.startswith("CloudWatch Logs") and len(v) > 100 for p, v in places.items())


def test_no_credential_appears_in_any_output(recorded_run: RecordedRun) -> None:
    leaks = [leak for place, data in _places(recorded_run) for leak in _found(place, data)]
    assert not leaks, "credentials leaked:\n" + "\n".join(leaks)
