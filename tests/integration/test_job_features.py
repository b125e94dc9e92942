"""Job features through the real clients: tags (ListTags), network isolation in the local runner, and
`rules_mode=auto` deciding from SageMaker's own answer (the local server refusing managed rules as AWS does
for an account without Debugger)."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path
from types import SimpleNamespace

import botocore.exceptions
import pytest
from support import tar_archive

from inventory_pipeline.aws.clients import make_client

pytestmark = pytest.mark.integration
CREDS = {"aws_access_key_id": "local-access-key", "aws_secret_access_key": "local-secret-key"}

# Tries to open a TCP connection to the given host:port (the local S3 endpoint, which the runner itself reaches)
# and reports what happened; the channel it was given must be there either way.
PROBE = """
import argparse, json, os, socket
p = argparse.ArgumentParser(); p.add_argument("--target"); a, _ = p.parse_known_args()
host, port = a.target.rsplit(":", 1)
try:
    socket.create_connection((host, int(port)), timeout=3).close()
    result = "connected"
except OSError as exc:
    result = f"{type(exc).__name__}: {exc}"
os.makedirs(os.environ["SM_MODEL_DIR"], exist_ok=True)
json.dump({"connect": result, "channel": sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"]))},
          open(os.path.join(os.environ["SM_MODEL_DIR"], "probe.json"), "w"))
"""


def _request(bucket: str, name: str, target: str, **extra) -> dict:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310",
            "TrainingInputMode": "File",
        },
        "RoleArn": "arn:aws:iam::000000000000:role/service-role/test",
        "HyperParameters": {
            "target": json.dumps(target),
            "sagemaker_program": '"probe.py"',
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
        "ResourceConfig": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 120},
        **extra,
    }


@pytest.fixture()
def clients(local_stack):
    s3 = make_client("s3", local_stack.endpoints["s3"], local_stack.region, **CREDS)
    sm = make_client("sagemaker", local_stack.endpoints["sagemaker"], local_stack.region, **CREDS)
    return s3, sm


@pytest.fixture()
def probe_bucket(clients, bucket_name):
    s3, _ = clients
    s3.create_bucket(Bucket=bucket_name)
    s3.put_object(Bucket=bucket_name, Key="code/sourcedir.tar.gz", Body=tar_archive({"probe.py": PROBE.encode()}))
    s3.put_object(Bucket=bucket_name, Key="data/train/data.txt", Body=b"rows")
    return bucket_name


def _finished(sm, name: str) -> dict:
    sm.get_waiter("training_job_completed_or_stopped").wait(
        TrainingJobName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )
    return sm.describe_training_job(TrainingJobName=name)


def _probe(s3, bucket: str, described: dict) -> dict:
    key = described["ModelArtifacts"]["S3ModelArtifacts"].split("/", 3)[3]
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return json.loads(tarfile.open(fileobj=io.BytesIO(body)).extractfile("probe.json").read())


def test_an_isolated_job_cannot_open_a_socket_but_gets_its_channels(local_stack, clients, probe_bucket):
    s3, sm = clients
    target = local_stack.endpoints["s3"].split("://", 1)[1]
    results = {}
    for isolated in (False, True):  # the same job with network first: the probe can connect, so it can fail
        name = f"net-{'isolated' if isolated else 'open'}-{uuid.uuid4().hex[:8]}"
        sm.create_training_job(**_request(probe_bucket, name, target, EnableNetworkIsolation=isolated))
        described = _finished(sm, name)
        assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
        assert described["EnableNetworkIsolation"] is isolated
        results[isolated] = _probe(s3, probe_bucket, described)
    assert results[False]["connect"] == "connected"
    assert results[True]["connect"] != "connected", results[True]
    # the runner, outside the namespace, staged the channel and uploaded the model
    assert results[True]["channel"] == ["data.txt"]


def test_list_tags_answers_the_tags_given_at_create(clients, probe_bucket):
    _, sm = clients
    name = f"tags-{uuid.uuid4().hex[:8]}"
    tags = [{"Key": "inventory:deployment", "Value": "prod/abid"}, {"Key": "inventory:run-id", "Value": "r1"}]
    arn = sm.create_training_job(**_request(probe_bucket, name, "127.0.0.1:9", Tags=tags))["TrainingJobArn"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == tags
    _finished(sm, name)
    with pytest.raises(botocore.exceptions.ClientError, match="was not found"):
        sm.list_tags(ResourceArn=arn + "-nope")


@pytest.fixture(scope="module")
def no_debugger_sagemaker(local_stack, tmp_path_factory):
    """A second local SageMaker server playing an account that never used Debugger (same S3 and Logs)."""
    from inventory_pipeline.local_aws.stack import LocalStack, ServerSpec, sagemaker_command

    def command(host: str, port: int, endpoints: dict[str, str], state_dir: Path) -> list[str]:
        return [*sagemaker_command(host, port, local_stack.endpoints, state_dir), "--no-debugger"]

    spec = ServerSpec(name="sagemaker", services=("sagemaker",), command=command, health_path="/ping")
    with LocalStack(tmp_path_factory.mktemp("no-debugger"), servers=[spec]) as side:
        yield side.endpoints["sagemaker"]


class _TaskInstance:
    def __init__(self) -> None:
        self.xcom: dict = {}

    def xcom_push(self, key: str, value) -> None:
        self.xcom[key] = value


@pytest.mark.parametrize("debugger", [True, False], ids=["account-with-debugger", "new-account"])
def test_rules_mode_auto_follows_sagemakers_answer(
    local_stack, no_debugger_sagemaker, clients, bucket_name, monkeypatch, tmp_path, debugger
):
    from inventory_pipeline.airflow.operators import TrainingJobOperator
    from inventory_pipeline.local_aws.stack import airflow_connection
    from inventory_pipeline.training.naming import job_name_for_run

    s3, _ = clients
    endpoints = dict(local_stack.endpoints)
    if not debugger:
        endpoints["sagemaker"] = no_debugger_sagemaker
    sm = make_client("sagemaker", endpoints["sagemaker"], local_stack.region, **CREDS)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(airflow_connection(endpoints, local_stack.region)))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    s3.create_bucket(Bucket=bucket_name)
    sleeper = tar_archive({"train.py": b"import time; time.sleep(60)"})
    s3.put_object(Bucket=bucket_name, Key="code/sleeper.tar.gz", Body=sleeper)
    for split in ("train", "valid", "test"):
        s3.put_object(Bucket=bucket_name, Key=f"data/{split}/1/a.jpg", Body=b"x")
    channels = {split: f"s3://{bucket_name}/data/{split}/" for split in ("train", "valid", "test")}
    params = {"bucket": bucket_name, "prefix": "abid", "rules_mode": "auto", "model": "small_cnn", "epochs": 1}
    run_id = f"manual__auto-{uuid.uuid4().hex[:8]}"
    ti = _TaskInstance()
    context = {"params": params, "dag": SimpleNamespace(dag_id="inventory_retraining"), "run_id": run_id, "ti": ti}
    operator = TrainingJobOperator(
        task_id="train", dataset={"channels": channels}, code={"s3_uri": f"s3://{bucket_name}/code/sleeper.tar.gz"}
    )
    name = job_name_for_run("inventory_retraining", run_id)
    try:
        result = operator.execute(context)
        described = sm.describe_training_job(TrainingJobName=name)
        assert result["Training"]["TrainingJobName"] == name
        if debugger:
            assert ti.xcom["rules_mode"] == "managed"
            assert [r["RuleConfigurationName"] for r in described["DebugRuleConfigurations"]]
        else:
            assert ti.xcom["rules_mode"] == "self_hosted"
            assert "DebugRuleConfigurations" not in described
            assert described["Environment"]["INVENTORY_RULES_MODE"] == "self_hosted"
            # what the operator met first: AWS's refusal for a request with rules
            request = {
                k: v
                for k, v in described.items()
                if k in ("AlgorithmSpecification", "RoleArn", "OutputDataConfig", "ResourceConfig", "StoppingCondition")
            }
            with pytest.raises(botocore.exceptions.ClientError, match="Debugger is not available"):
                sm.create_training_job(
                    TrainingJobName=f"{name[:50]}-rules",
                    **request,
                    DebugRuleConfigurations=[
                        {
                            "RuleConfigurationName": "Overfit",
                            "RuleEvaluatorImage": "x.dkr.ecr.us-east-1.amazonaws.com/r:latest",
                        }
                    ],
                )
        # a retry adopts the job whatever mode it was created in, and says which
        retried = _TaskInstance()
        operator.execute({**context, "ti": retried})
        assert retried.xcom["rules_mode"] == ti.xcom["rules_mode"]
        assert len(sm.list_training_jobs(NameContains=name)["TrainingJobSummaries"]) == 1
    finally:
        if sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "InProgress":
            sm.stop_training_job(TrainingJobName=name)


def tiny_wheel(dest: Path, name: str = "tinyoffline", version: str = "0.1") -> Path:
    """A real, installable pure-Python wheel, written by hand (no build tools, no download)."""
    import base64
    import hashlib
    import zipfile

    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": b"VALUE = 'installed offline'\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for path, data in files.items()
    ]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    wheel = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def test_an_isolated_job_installs_its_packages_from_the_wheels_in_its_code(clients, probe_bucket, tmp_path):
    from inventory_pipeline.training.package import build_sourcedir

    s3, sm = clients
    code, wheelhouse = tmp_path / "code", tmp_path / "wheelhouse"
    code.mkdir(), wheelhouse.mkdir()
    (code / "train.py").write_text(
        "import json, os, tinyoffline\n"
        "os.makedirs(os.environ['SM_MODEL_DIR'], exist_ok=True)\n"
        "json.dump({'connect': tinyoffline.VALUE, 'channel': []},"
        " open(os.path.join(os.environ['SM_MODEL_DIR'], 'probe.json'), 'w'))\n"
    )
    (code / "requirements.txt").write_text("tinyoffline==0.1\n")
    tiny_wheel(wheelhouse)
    s3.put_object(Bucket=probe_bucket, Key="code/offline.tar.gz", Body=build_sourcedir(code, wheelhouse))
    name = f"offline-{uuid.uuid4().hex[:8]}"
    request = _request(probe_bucket, name, "127.0.0.1:9", EnableNetworkIsolation=True)
    request["HyperParameters"].update(
        sagemaker_program='"train.py"',
        sagemaker_submit_directory=json.dumps(f"s3://{probe_bucket}/code/offline.tar.gz"),
    )
    sm.create_training_job(**request)
    described = _finished(sm, name)
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    assert _probe(s3, probe_bucket, described)["connect"] == "installed offline"


def test_the_pretrained_checkpoint_is_uploaded_once_under_its_content_hash(s3, bucket_name, tmp_path):
    from inventory_pipeline.training.offline import upload_pretrained

    s3.create_bucket(Bucket=bucket_name)
    (tmp_path / "efficientnet-lite0.pth").write_bytes(b"weights v1")
    first = upload_pretrained(s3, bucket_name, "abid/", tmp_path)
    assert first.startswith(f"s3://{bucket_name}/abid/pretrained/")
    etag = s3.head_object(Bucket=bucket_name, Key=first.split("/", 3)[3] + "efficientnet-lite0.pth")["ETag"]
    assert upload_pretrained(s3, bucket_name, "abid/", tmp_path) == first
    assert s3.head_object(Bucket=bucket_name, Key=first.split("/", 3)[3] + "efficientnet-lite0.pth")["ETag"] == etag
    (tmp_path / "efficientnet-lite0.pth").write_bytes(b"weights v2")
    assert upload_pretrained(s3, bucket_name, "abid/", tmp_path) != first
