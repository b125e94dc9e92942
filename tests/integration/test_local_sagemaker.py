"""The local SageMaker server and runner through boto3, exactly as the provider's operators talk to them."""

from __future__ import annotations

import io
import json
import tarfile
import time
import urllib.request

import botocore.exceptions
import pytest
from support import tar_archive, wait_until

from inventory_pipeline.aws.clients import make_client

pytestmark = pytest.mark.integration
CREDS = {"aws_access_key_id": "local-access-key", "aws_secret_access_key": "local-secret-key"}

ENTRY_POINT = """
import json, os, sys, time, argparse
p = argparse.ArgumentParser(); p.add_argument("--epochs", type=int); p.add_argument("--mode", default="ok")
a, _ = p.parse_known_args()
print("hosts", os.environ["SM_HOSTS"], "current", os.environ["SM_CURRENT_HOST"], flush=True)
assert os.listdir(os.environ["SM_CHANNEL_TRAIN"]) == ["data.txt"]
if a.mode == "fail":
    open(os.environ["SM_OUTPUT_FAILURE"], "w").write("ValueError: the data is bad")
    sys.exit(3)
if a.mode == "sleep":
    time.sleep(60)
for epoch in range(1, a.epochs + 1):
    print(f"epoch={epoch}; train_loss={1.0 / epoch:.3f};", flush=True)
os.makedirs(os.environ["SM_MODEL_DIR"], exist_ok=True)
open(os.path.join(os.environ["SM_MODEL_DIR"], "model.bin"), "w").write("weights")
open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "metrics.json"), "w").write(json.dumps({"accuracy": 0.5}))
"""


@pytest.fixture()
def clients(local_stack):
    s3 = make_client("s3", local_stack.endpoints["s3"], local_stack.region, **CREDS)
    sm = make_client("sagemaker", local_stack.endpoints["sagemaker"], local_stack.region, **CREDS)
    logs = make_client("logs", local_stack.endpoints["logs"], local_stack.region, **CREDS)
    return s3, sm, logs


def _request(bucket: str, name: str, mode: str = "ok", instances: int = 1, max_runtime: int = 120) -> dict:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310",
            "TrainingInputMode": "File",
            "MetricDefinitions": [
                {"Name": "train:loss", "Regex": "train_loss=([0-9.]+);"},
                {"Name": "epoch", "Regex": "epoch=([0-9]+);"},
            ],
        },
        "RoleArn": "arn:aws:iam::000000000000:role/service-role/test",
        "HyperParameters": {
            "epochs": "3",
            "mode": json.dumps(mode),
            "sagemaker_program": '"entry.py"',
            "sagemaker_submit_directory": json.dumps(f"s3://{bucket}/code/sourcedir.tar.gz"),
        },
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{bucket}/data/train/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/jobs"},
        "ResourceConfig": {"InstanceType": "ml.c5.xlarge", "InstanceCount": instances, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
    }


@pytest.fixture()
def job_bucket(clients, bucket_name):
    s3 = clients[0]
    s3.create_bucket(Bucket=bucket_name)
    s3.put_object(Bucket=bucket_name, Key="code/sourcedir.tar.gz", Body=tar_archive({"entry.py": ENTRY_POINT.encode()}))
    s3.put_object(Bucket=bucket_name, Key="data/train/data.txt", Body=b"x")
    return bucket_name


def _wait(sm, name: str, timeout: float = 120) -> dict:
    def finished() -> dict | None:
        job = sm.describe_training_job(TrainingJobName=name)
        return job if job["TrainingJobStatus"] not in ("InProgress", "Stopping") else None

    return wait_until(finished, timeout, 0.5, what=f"{name} to finish")


def test_job_completes_with_outputs_logs_metrics_and_transitions(clients, job_bucket):
    s3, sm, logs = clients
    name = f"{job_bucket}-ok"
    arn = sm.create_training_job(**_request(job_bucket, name, instances=2))["TrainingJobArn"]
    assert arn.endswith(f"training-job/{name}")
    job = _wait(sm, name)
    assert job["TrainingJobStatus"] == "Completed" and job["SecondaryStatus"] == "Completed"
    assert [t["Status"] for t in job["SecondaryStatusTransitions"]] == [
        "Starting",
        "Downloading",
        "Training",
        "Uploading",
        "Completed",
    ]
    assert {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]} == {"train:loss": 0.333, "epoch": 3.0}
    assert job["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{job_bucket}/jobs/{name}/output/model.tar.gz"
    assert job["BillableTimeInSeconds"] >= 1 and job["TrainingEndTime"] >= job["TrainingStartTime"]
    body = s3.get_object(Bucket=job_bucket, Key=f"jobs/{name}/output/model.tar.gz")["Body"].read()
    assert tarfile.open(fileobj=io.BytesIO(body)).getnames() == ["model.bin"]
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=f"{name}/")
    names = sorted(s["logStreamName"].split("/")[1].rsplit("-", 1)[0] for s in streams["logStreams"])
    assert names == ["algo-1", "algo-2"]
    events = logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=streams["logStreams"][0]["logStreamName"]
    )["events"]
    assert any("epoch=3;" in e["message"] for e in events)


def test_aws_shaped_errors(clients, job_bucket, local_stack):
    _, sm, _ = clients
    with pytest.raises(botocore.exceptions.ClientError) as missing:
        sm.describe_training_job(TrainingJobName="no-such-job")
    assert missing.value.response["Error"] == {"Code": "ValidationException", "Message": "Requested resource not found"}
    name = f"{job_bucket}-dup"
    sm.create_training_job(**_request(job_bucket, name))
    with pytest.raises(sm.exceptions.ResourceInUse):
        sm.create_training_job(**_request(job_bucket, name))
    _wait(sm, name)
    # A request boto3 would refuse locally, sent raw: the server validates with botocore's model too.
    raw = urllib.request.Request(
        local_stack.endpoints["sagemaker"] + "/",
        data=json.dumps({"TrainingJobName": "x"}).encode(),
        headers={"X-Amz-Target": "SageMaker.CreateTrainingJob", "Content-Type": "application/x-amz-json-1.1"},
    )
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(raw)
    payload = json.loads(bad.value.read())
    assert bad.value.code == 400 and payload["__type"] == "ValidationException"
    assert 'Missing required parameter in input: "RoleArn"' in payload["message"]


def test_failing_entry_point_fails_the_job_with_its_error(clients, job_bucket):
    _, sm, _ = clients
    name = f"{job_bucket}-fail"
    sm.create_training_job(**_request(job_bucket, name, mode="fail"))
    job = _wait(sm, name)
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith("AlgorithmError: ExecuteUserScriptError")
    assert "ValueError: the data is bad" in job["FailureReason"]


def test_stop_and_max_runtime(clients, job_bucket):
    _, sm, _ = clients
    stopped, timed_out = f"{job_bucket}-stop", f"{job_bucket}-slow"
    sm.create_training_job(**_request(job_bucket, stopped, mode="sleep"))
    sm.create_training_job(**_request(job_bucket, timed_out, mode="sleep", max_runtime=3))
    deadline = time.time() + 60
    while sm.describe_training_job(TrainingJobName=stopped)["SecondaryStatus"] != "Training":
        assert time.time() < deadline
        time.sleep(0.3)
    sm.stop_training_job(TrainingJobName=stopped)
    job = _wait(sm, stopped, timeout=60)
    assert job["TrainingJobStatus"] == "Stopped" and job["SecondaryStatus"] == "Stopped"
    job = _wait(sm, timed_out, timeout=60)
    assert job["TrainingJobStatus"] == "Stopped" and job["SecondaryStatus"] == "MaxRuntimeExceeded"
    with pytest.raises(botocore.exceptions.ClientError, match="ValidationException"):
        sm.stop_training_job(TrainingJobName=stopped)  # already terminal


def test_unsafe_source_archives_are_refused(clients, job_bucket):
    s3, sm, _ = clients
    for suffix, archive in (
        ("traversal", tar_archive({"../../escape.py": b"print('out')", "entry.py": ENTRY_POINT.encode()})),
        ("link", tar_archive({"entry.py": ENTRY_POINT.encode()}, symlinks={"evil": "/etc/passwd"})),
    ):
        key = f"code-{suffix}/sourcedir.tar.gz"
        s3.put_object(Bucket=job_bucket, Key=key, Body=archive)
        request = _request(job_bucket, f"{job_bucket}-{suffix}")
        request["HyperParameters"]["sagemaker_submit_directory"] = json.dumps(f"s3://{job_bucket}/{key}")
        sm.create_training_job(**request)
        job = _wait(sm, request["TrainingJobName"])
        assert job["TrainingJobStatus"] == "Failed"
        assert "refused to extract" in job["FailureReason"]


def test_list_training_jobs_filters(clients, job_bucket):
    _, sm, _ = clients
    for suffix in ("list-a", "list-b"):
        sm.create_training_job(**_request(job_bucket, f"{job_bucket}-{suffix}"))
    for suffix in ("list-a", "list-b"):
        _wait(sm, f"{job_bucket}-{suffix}")
    found = sm.list_training_jobs(NameContains=f"{job_bucket}-list", StatusEquals="Completed", SortBy="Name")
    assert [j["TrainingJobName"] for j in found["TrainingJobSummaries"]] == [
        f"{job_bucket}-list-a",
        f"{job_bucket}-list-b",
    ]
    page = sm.list_training_jobs(NameContains=f"{job_bucket}-list", MaxResults=1)
    assert len(page["TrainingJobSummaries"]) == 1 and page["NextToken"]


def test_restarted_server_fails_jobs_whose_runner_died(tmp_path):
    from inventory_pipeline.local_aws.runner.job_store import JobStore
    from inventory_pipeline.local_aws.sagemaker_api import LocalSageMaker

    store = JobStore(tmp_path)
    store.write(
        {
            "TrainingJobName": "orphan",
            "TrainingJobStatus": "InProgress",
            "SecondaryStatus": "Training",
            "SecondaryStatusTransitions": [],
            "_runner_pid": 999_999_999,
            "DebugRuleEvaluationStatuses": [{"RuleConfigurationName": "Overfit", "RuleEvaluationStatus": "InProgress"}],
        }
    )
    LocalSageMaker(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:1")
    job = store.read("orphan")
    assert job["TrainingJobStatus"] == "Failed" and "server stopped" in job["FailureReason"]
    assert job["DebugRuleEvaluationStatuses"][0]["RuleEvaluationStatus"] == "Error"


def test_values_sagemaker_refuses_server_side_are_refused(clients, job_bucket):
    """botocore checks types and required members; SageMaker also checks enums, patterns and maximums."""
    _, sm, _ = clients
    request = _request(job_bucket, f"{job_bucket}-refused")
    request["RoleArn"] = "arn:aws:iam::1234:role/short-account-id"
    request["ResourceConfig"]["InstanceType"] = "ml.c5.large"  # no such training instance type
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sm.create_training_job(**request)
    error = refused.value.response["Error"]
    assert error["Code"] == "ValidationException" and error["Message"].startswith("2 validation errors detected")
    assert "at 'roleArn' failed to satisfy constraint" in error["Message"]
    assert "at 'resourceConfig.instanceType' failed to satisfy constraint" in error["Message"]
    with pytest.raises(botocore.exceptions.ClientError, match="Requested resource not found"):
        sm.describe_training_job(TrainingJobName=request["TrainingJobName"])


def test_work_left_unfinished_by_a_dead_runner_ends_instead_of_staying_in_progress(tmp_path):
    """A runner that dies (killed, crashed) can never finish its job or rules: the server ends them when asked,
    as SageMaker ends a job whose instance died and a rule whose processing job crashed."""
    import subprocess
    import sys

    from inventory_pipeline.local_aws.runner.job_store import JobStore
    from inventory_pipeline.local_aws.sagemaker_api import LocalSageMaker

    backend = LocalSageMaker(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    rules = [
        {"RuleConfigurationName": "Overfit", "RuleEvaluationStatus": "InProgress"},
        {"RuleConfigurationName": "Overtraining", "RuleEvaluationStatus": "NoIssuesFound"},
    ]
    store = JobStore(tmp_path)
    for name, status, pid in (
        ("rules-orphaned", "Completed", dead.pid),
        ("job-orphaned", "InProgress", dead.pid),
        ("starting", "InProgress", None),
    ):
        store.write(
            {
                "TrainingJobName": name,
                "TrainingJobStatus": status,
                "SecondaryStatus": "Training",
                "CreationTime": 1.0,
                "SecondaryStatusTransitions": [],
                "_runner_pid": pid,
                "DebugRuleEvaluationStatuses": [dict(r) for r in rules],
            }
        )

    completed = backend.describe_training_job({"TrainingJobName": "rules-orphaned"})
    assert completed["TrainingJobStatus"] == "Completed"  # it did complete; only its rule died
    overfit, overtraining = completed["DebugRuleEvaluationStatuses"]
    assert overfit["RuleEvaluationStatus"] == "Error" and "exited before reporting" in overfit["StatusDetails"]
    assert overtraining["RuleEvaluationStatus"] == "NoIssuesFound"
    running = backend.list_training_jobs({"NameContains": "job-orphaned"})["TrainingJobSummaries"]
    assert [j["TrainingJobStatus"] for j in running] == ["Failed"]
    failed = backend.describe_training_job({"TrainingJobName": "job-orphaned"})
    assert "runner process exited unexpectedly" in failed["FailureReason"]
    # No runner pid yet: CreateTrainingJob is still starting it; nothing to end.
    assert backend.describe_training_job({"TrainingJobName": "starting"})["TrainingJobStatus"] == "InProgress"


MANIFEST_ENTRY_POINT = """
import os, sys
root = os.environ["SM_CHANNEL_TRAIN"]
found = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)
print("channel files:", found, flush=True)
expected = ["datasets/v1/train/labels.json", "raw/packs/train/p1.tar", "raw/packs/train/p2.tar"]
sys.exit(0 if found == expected and open(os.path.join(root, "raw/packs/train/p2.tar")).read() == "p2" else 3)
"""


def test_manifest_file_channel_gets_each_listed_object_at_its_key_relative_to_the_prefix(clients, bucket_name):
    """S3DataType=ManifestFile as SageMaker runs it: only the listed objects, at <channel>/<relative key>."""
    s3, sm, _ = clients
    s3.create_bucket(Bucket=bucket_name)
    s3.put_object(
        Bucket=bucket_name, Key="code/sourcedir.tar.gz", Body=tar_archive({"entry.py": MANIFEST_ENTRY_POINT.encode()})
    )
    for key in (
        "proj/raw/packs/train/p1.tar",
        "proj/raw/packs/train/p2.tar",
        "proj/raw/packs/train/other.tar",
        "proj/datasets/v1/train/labels.json",
    ):
        s3.put_object(Bucket=bucket_name, Key=key, Body=key.rsplit("/", 1)[-1].split(".")[0].encode())
    manifest = [
        {"prefix": f"s3://{bucket_name}/proj/"},
        "datasets/v1/train/labels.json",
        "raw/packs/train/p1.tar",
        "raw/packs/train/p2.tar",
    ]
    s3.put_object(Bucket=bucket_name, Key="proj/datasets/v1/train.manifest", Body=json.dumps(manifest).encode())
    s3.put_object(Bucket=bucket_name, Key="proj/bad.manifest", Body=json.dumps(["raw/packs/train/p1.tar"]).encode())

    def request(name: str, manifest_key: str) -> dict:
        job = _request(bucket_name, name)
        job["InputDataConfig"][0]["DataSource"]["S3DataSource"].update(
            S3DataType="ManifestFile", S3Uri=f"s3://{bucket_name}/{manifest_key}"
        )
        return job

    sm.create_training_job(**request(f"{bucket_name}-mf", "proj/datasets/v1/train.manifest"))
    job = _wait(sm, f"{bucket_name}-mf")
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3DataType"] == "ManifestFile"

    sm.create_training_job(**request(f"{bucket_name}-badmf", "proj/bad.manifest"))
    job = _wait(sm, f"{bucket_name}-badmf")
    assert job["TrainingJobStatus"] == "Failed"
    assert "must be a JSON list starting with" in job["FailureReason"]
