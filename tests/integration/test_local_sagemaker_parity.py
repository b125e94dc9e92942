"""The local SageMaker server where it used to differ from SageMaker, tried with real clients: stopping (the
SIGTERM window, then the model uploaded), billable time per instance, every ListTrainingJobs filter, the tags
API, DeleteTrainingJob and UpdateTrainingJob, metric values in CloudWatch, and the sagemaker SDK v3's
`ModelTrainer` with `SourceCode` running to completion."""

from __future__ import annotations

import datetime as dt
import io
import tarfile
import time

import botocore.exceptions
import pytest
from support import tar_archive, wait_until
from test_local_sagemaker import CREDS, _request, _wait

from inventory_pipeline.aws.clients import make_client

pytestmark = pytest.mark.integration

# Modes: "graceful" saves its model on SIGTERM (after a 2 s save) and exits 0, as train.py does;
# "stubborn" ignores SIGTERM (it is killed once the stop window is over); "ok" prints metrics and ends.
ENTRY = """
import argparse, os, signal, sys, time
p = argparse.ArgumentParser(); p.add_argument("--epochs", type=int); p.add_argument("--mode", default="ok")
a, _ = p.parse_known_args()
model = os.environ["SM_MODEL_DIR"]
def save(text):
    os.makedirs(model, exist_ok=True)
    open(os.path.join(model, "model.bin"), "w").write(text)
def on_sigterm(*_):
    print("SIGTERM received, saving", flush=True)
    time.sleep(2)
    save("saved on SIGTERM")
    sys.exit(0)
if a.mode == "graceful":
    signal.signal(signal.SIGTERM, on_sigterm)
if a.mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    save("saved before the stop")
for epoch in range(1, a.epochs + 1):
    print(f"epoch={epoch}; train_loss={1.0 / epoch:.3f};", flush=True)
    time.sleep(0.3)
if a.mode in ("graceful", "stubborn"):
    print("ready", flush=True)
    time.sleep(120)
save("finished")
"""


@pytest.fixture()
def clients(local_stack):
    def client(service: str):
        return make_client(service, local_stack.endpoints[service], local_stack.region, **CREDS)

    return client("s3"), client("sagemaker"), client("logs"), client("cloudwatch")


@pytest.fixture()
def job_bucket(clients, bucket_name):
    s3 = clients[0]
    s3.create_bucket(Bucket=bucket_name)
    s3.put_object(Bucket=bucket_name, Key="code/sourcedir.tar.gz", Body=tar_archive({"entry.py": ENTRY.encode()}))
    s3.put_object(Bucket=bucket_name, Key="data/train/data.txt", Body=b"x")
    return bucket_name


def _logged(logs, name: str, text: str) -> bool:
    try:
        streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=f"{name}/")
    except logs.exceptions.ResourceNotFoundException:  # the first job's log group is not there yet
        return False
    return any(
        text in event["message"]
        for stream in streams["logStreams"]
        for event in logs.get_log_events(
            logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream["logStreamName"]
        )["events"]
    )


def _model_text(s3, job: dict) -> str:
    bucket, key = job["ModelArtifacts"]["S3ModelArtifacts"][5:].split("/", 1)
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        return tar.extractfile("model.bin").read().decode()


def test_stop_shows_stopping_then_uploads_what_the_job_saved_in_the_window(clients, job_bucket):
    s3, sm, logs, _ = clients
    name = f"{job_bucket}-graceful"
    sm.create_training_job(**_request(job_bucket, name, mode="graceful"))
    wait_until(lambda: _logged(logs, name, "ready"), 90, what="the job to train")
    sm.stop_training_job(TrainingJobName=name)
    stopping = sm.describe_training_job(TrainingJobName=name)
    assert (stopping["TrainingJobStatus"], stopping["SecondaryStatus"]) == ("Stopping", "Stopping")
    job = _wait(sm, name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert [t["Status"] for t in job["SecondaryStatusTransitions"]][-3:] == ["Training", "Stopping", "Stopped"]
    assert "FailureReason" not in job
    assert _model_text(s3, job) == "saved on SIGTERM"  # written 2 s after SIGTERM, inside the window
    assert _logged(logs, name, "SIGTERM received")


def test_an_isolated_container_job_runs_in_both_namespaces_and_its_entry_point_gets_the_stop(clients, job_bucket):
    """EnableNetworkIsolation + ContainerEntrypoint: the entry point sees /opt/ml (its mount namespace) inside the
    job's network namespace (loopback only), and the stop's SIGTERM reaches the entry point itself through
    nsenter and unshare (each execs the next), so its model saved in the window is uploaded."""
    s3, sm, logs, _ = clients
    s3.put_object(Bucket=job_bucket, Key="container/entry.py", Body=ENTRY.encode())
    name = f"{job_bucket}-isolated-container"
    request = _request(job_bucket, name) | {"EnableNetworkIsolation": True}
    del request["HyperParameters"]
    script = 'echo "interfaces=$(ip -o link | wc -l);$(ip -o link | cut -d: -f2 | tr -d " ")"; ' + (
        'exec python3 /opt/ml/input/data/code/entry.py "$@"'  # exec: the entry point is the process signalled
    )
    request["AlgorithmSpecification"] |= {
        "ContainerEntrypoint": ["sh", "-c", script, "entry"],
        "ContainerArguments": ["--mode", "graceful", "--epochs", "1"],
    }
    request["InputDataConfig"].append(
        {
            "ChannelName": "code",
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": f"s3://{job_bucket}/container/",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
        }
    )
    sm.create_training_job(**request)
    wait_until(lambda: _logged(logs, name, "ready"), 90, what="the job to train")
    sm.stop_training_job(TrainingJobName=name)
    job = _wait(sm, name)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "Stopped"), job.get("FailureReason")
    assert _logged(logs, name, "interfaces=1;lo")  # the job's network namespace: loopback only
    assert _model_text(s3, job) == "saved on SIGTERM"  # the entry point's own handler ran
    assert _logged(logs, name, "SIGTERM received")


def test_max_runtime_stops_the_same_way_and_keeps_the_model(clients, job_bucket):
    s3, sm, _, _ = clients
    name = f"{job_bucket}-maxruntime"
    sm.create_training_job(**_request(job_bucket, name, mode="graceful", max_runtime=4))
    seen = set()

    def ended():
        job = sm.describe_training_job(TrainingJobName=name)
        seen.add((job["TrainingJobStatus"], job["SecondaryStatus"]))
        return job if job["TrainingJobStatus"] not in ("InProgress", "Stopping") else None

    job = wait_until(ended, 90, 0.1, what="the job to stop")
    assert ("Stopping", "Stopping") in seen  # the 2 s save keeps it Stopping long enough to be seen
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    assert _model_text(s3, job) == "saved on SIGTERM"


def test_a_job_ignoring_sigterm_is_killed_when_the_window_ends_and_its_model_still_uploaded(clients, job_bucket):
    """tests/conftest.py sets the local runner's stop window to 5 s (SageMaker's is 120 s)."""
    s3, sm, logs, _ = clients
    name = f"{job_bucket}-stubborn"
    sm.create_training_job(**_request(job_bucket, name, mode="stubborn"))
    wait_until(lambda: _logged(logs, name, "ready"), 90, what="the job to train")
    stopped_at = time.time()
    sm.stop_training_job(TrainingJobName=name)
    job = _wait(sm, name, timeout=60)
    assert job["TrainingJobStatus"] == "Stopped"
    took = time.time() - stopped_at
    assert 5 <= took < 60, took  # it waited out the window, then SIGKILL (the entry would sleep 120 s)
    assert _model_text(s3, job) == "saved before the stop"


def test_billable_time_is_per_instance_and_not_more_than_the_training_time(clients, job_bucket):
    _, sm, _, _ = clients
    name = f"{job_bucket}-billing"
    sm.create_training_job(**_request(job_bucket, name, instances=2))
    job = _wait(sm, name)
    assert job["TrainingJobStatus"] == "Completed"
    start, end = job["TrainingStartTime"], job["TrainingEndTime"]
    assert job["TrainingTimeInSeconds"] == max(1, int((end - start).total_seconds()))
    # AWS: wall-clock seconds per instance (clients multiply by InstanceCount); on-demand bills all of it
    assert job["BillableTimeInSeconds"] == job["TrainingTimeInSeconds"]
    # billing starts when the instances start, before the download (AWS's TrainingStartTime)
    downloading = next(t for t in job["SecondaryStatusTransitions"] if t["Status"] == "Downloading")
    assert start <= downloading["StartTime"]


def test_list_training_jobs_honours_every_filter(clients, job_bucket):
    _, sm, _, _ = clients
    plan = "arn:aws:sagemaker:us-east-1:000000000000:training-plan/weekly"
    first, second = f"{job_bucket}-lst-warm", f"{job_bucket}-lst-plan"
    warm = _request(job_bucket, first)
    warm["ResourceConfig"]["KeepAlivePeriodInSeconds"] = 60
    sm.create_training_job(**warm)
    _wait(sm, first)
    between = dt.datetime.now(dt.UTC)
    time.sleep(1.1)
    planned = _request(job_bucket, second)
    planned["ResourceConfig"]["TrainingPlanArn"] = plan
    sm.create_training_job(**planned)
    _wait(sm, second)

    def names(**filters) -> list[str]:
        found = sm.list_training_jobs(NameContains=f"{job_bucket}-lst", SortBy="Name", **filters)
        return [j["TrainingJobName"] for j in found["TrainingJobSummaries"]]

    assert names() == [second, first]
    assert names(LastModifiedTimeBefore=between) == [first]
    assert names(LastModifiedTimeAfter=between) == [second]
    assert names(WarmPoolStatusEquals="Terminated") == [first]  # no instance outlives a local job
    assert names(WarmPoolStatusEquals="Available") == []
    assert names(TrainingPlanArnEquals=plan) == [second]
    summary = sm.list_training_jobs(NameContains=second)["TrainingJobSummaries"][0]
    assert summary["TrainingPlanArn"] == plan and summary["SecondaryStatus"] == "Completed"
    warm_job = sm.describe_training_job(TrainingJobName=first)
    assert warm_job["WarmPoolStatus"]["Status"] == "Terminated"


def test_tags_delete_and_update_as_sagemaker_defines_them(clients, job_bucket):
    s3, sm, logs, _ = clients
    name = f"{job_bucket}-Tagged"  # capitals: the ARN carries the name in lower case
    request = _request(job_bucket, name, mode="graceful")
    request["Tags"] = [{"Key": "deployment", "Value": "prod"}, {"Key": "run", "Value": "r1"}]
    arn = sm.create_training_job(**request)["TrainingJobArn"]
    assert arn.endswith(f"training-job/{name.lower()}")
    wait_until(lambda: _logged(logs, name, "ready"), 90, what="the job to train")
    assert "Tags" not in sm.describe_training_job(TrainingJobName=name)  # DescribeTrainingJob has no tags
    assert sm.list_tags(ResourceArn=arn)["Tags"] == request["Tags"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "run", "Value": "r2"}, {"Key": "owner", "Value": "ml"}])
    sm.delete_tags(ResourceArn=arn, TagKeys=["deployment"])
    assert {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]} == {"run": "r2", "owner": "ml"}
    with pytest.raises(botocore.exceptions.ClientError, match="reserved"):
        sm.add_tags(ResourceArn=arn, Tags=[{"Key": "aws:owner", "Value": "x"}])
    with pytest.raises(botocore.exceptions.ClientError, match="not found"):
        sm.list_tags(ResourceArn=arn.replace("tagged", "other"))

    # UpdateTrainingJob: the profiler while it runs (the runner starts sampling); a warm pool it never asked
    # for is refused
    assert sm.describe_training_job(TrainingJobName=name)["ProfilingStatus"] == "Disabled"
    profiler = {"S3OutputPath": f"s3://{job_bucket}/profiler", "ProfilingIntervalInMilliseconds": 200}
    assert sm.update_training_job(TrainingJobName=name, ProfilerConfig=profiler)["TrainingJobArn"] == arn
    described = sm.describe_training_job(TrainingJobName=name)
    assert described["ProfilingStatus"] == "Enabled" and described["ProfilerConfig"] == profiler
    with pytest.raises(botocore.exceptions.ClientError, match="warm pool"):
        sm.update_training_job(TrainingJobName=name, ResourceConfig={"KeepAlivePeriodInSeconds": 60})
    with pytest.raises(botocore.exceptions.ClientError) as unsupported:
        sm.update_training_job(TrainingJobName=name, RemoteDebugConfig={"EnableRemoteDebug": True})
    assert "RemoteDebugConfig is not supported" in unsupported.value.response["Error"]["Message"]

    # DeleteTrainingJob: only once the job is terminal
    with pytest.raises(sm.exceptions.ResourceInUse):
        sm.delete_training_job(TrainingJobName=name)
    time.sleep(1)  # a few samples at 200 ms
    sm.stop_training_job(TrainingJobName=name)
    _wait(sm, name)
    with pytest.raises(botocore.exceptions.ClientError, match="InProgress"):
        sm.update_training_job(TrainingJobName=name, ProfilerConfig={"DisableProfiler": False})
    wait_until(lambda: _try_delete(sm, name), 90, what="the delete to be accepted (output uploaded)")
    sampled = s3.list_objects_v2(Bucket=job_bucket, Prefix=f"profiler/{name}/profiler-output/system/")
    assert sampled.get("KeyCount", 0) > 0  # the runner applied the update: system metrics were sampled
    with pytest.raises(botocore.exceptions.ClientError, match="Requested resource not found"):
        sm.describe_training_job(TrainingJobName=name)
    with pytest.raises(sm.exceptions.ResourceNotFound):
        sm.delete_training_job(TrainingJobName=name)
    assert sm.list_training_jobs(NameContains=name)["TrainingJobSummaries"] == []
    with pytest.raises(botocore.exceptions.ClientError) as unknown:  # what the server still lacks, it names
        sm.list_processing_jobs()
    error = unknown.value.response["Error"]
    assert error["Code"] == "UnknownOperationException" and "ListProcessingJobs" in error["Message"]


def _try_delete(sm, name: str) -> bool:
    try:
        sm.delete_training_job(TrainingJobName=name)
        return True
    except sm.exceptions.ResourceInUse:
        return False


def test_metric_values_reach_cloudwatch_as_sagemaker_publishes_them(clients, job_bucket):
    _, sm, _, cloudwatch = clients
    name = f"{job_bucket}-metrics"
    sm.create_training_job(**_request(job_bucket, name, instances=2))
    job = _wait(sm, name)
    namespace = "/aws/sagemaker/TrainingJobs"
    host = {"Name": "Host", "Value": f"{name}/algo-1"}
    listed = cloudwatch.list_metrics(Namespace=namespace, Dimensions=[host])["Metrics"]
    assert {m["MetricName"] for m in listed} == {"train:loss", "epoch"}
    assert all(m["Dimensions"] == [host] for m in listed)
    second_host = cloudwatch.list_metrics(Namespace=namespace, Dimensions=[{"Name": "Host", "Value": f"{name}/algo-2"}])
    assert {m["MetricName"] for m in second_host["Metrics"]} == {"train:loss", "epoch"}
    # EndTime a minute ahead: CloudWatch (and moto, which truncates it to the second) leaves out values at or after
    # EndTime, and the job's last values can carry this very second.
    window = {
        "StartTime": job["CreationTime"] - dt.timedelta(minutes=1),
        "EndTime": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1),
    }
    stats = cloudwatch.get_metric_statistics(
        Namespace=namespace,
        MetricName="epoch",
        Dimensions=[host],
        Period=60,
        Statistics=["Maximum", "SampleCount"],
        **window,
    )
    assert max(p["Maximum"] for p in stats["Datapoints"]) == 3.0
    assert sum(p["SampleCount"] for p in stats["Datapoints"]) == 3.0  # one value per printed line
    loss = cloudwatch.get_metric_statistics(
        Namespace=namespace, MetricName="train:loss", Dimensions=[host], Period=60, Statistics=["Minimum"], **window
    )
    assert min(p["Minimum"] for p in loss["Datapoints"]) == pytest.approx(0.333)


# What a user writes for the SDK v3: a source dir and an entry script (kept tiny here: the mechanism, not train.py).
SDK_ENTRY = """
import argparse, os
p = argparse.ArgumentParser(); p.add_argument("--epochs", type=int)
a, _ = p.parse_known_args()
for epoch in range(1, a.epochs + 1):
    print(f"epoch={epoch}; train_loss={1.0 / epoch:.3f};", flush=True)
print("cwd", os.getcwd(), "channels", sorted(os.listdir("/opt/ml/input/data")), flush=True)
open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w").write("trained by ModelTrainer")
"""


def test_sdk_v3_model_trainer_with_source_code_runs_to_completion(
    local_stack, clients, bucket_name, tmp_path, monkeypatch
):
    """The SDK sends ContainerEntrypoint/ContainerArguments and its own `sm_drivers` and `code` channels; the
    runner runs them as the container would, with the job's directory at /opt/ml."""
    import boto3
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.core.resources import TrainingJob
    from sagemaker.core.training.configs import Compute, SourceCode
    from sagemaker.train import ModelTrainer

    s3, _, logs, _ = clients
    for variable, service in (
        ("SAGEMAKER", "sagemaker"),
        ("S3", "s3"),
        ("CLOUDWATCH_LOGS", "logs"),
        ("STS", "s3"),
        ("IAM", "s3"),
    ):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{variable}", local_stack.endpoints[service])  # moto serves all
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")  # moto lacks SimulatePrincipalPolicy
    for name, value in local_stack.env().items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "hello.py").write_text(SDK_ENTRY)
    s3.create_bucket(Bucket=bucket_name)
    # A named default bucket: the SDK would otherwise ask STS at its fixed regional endpoint for the account.
    session = Session(boto_session=boto3.Session(region_name=local_stack.region), default_bucket=bucket_name)
    trainer = ModelTrainer(
        training_image="763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310",
        source_code=SourceCode(source_dir=str(tmp_path / "src"), entry_script="hello.py"),
        compute=Compute(instance_type="ml.c5.xlarge", instance_count=1),
        role="arn:aws:iam::000000000000:role/service-role/test",
        hyperparameters={"epochs": 3},
        base_job_name="sdk-v3",
        sagemaker_session=session,
    )
    trainer.train(wait=True, logs=False)

    name = trainer._latest_training_job.training_job_name
    job = TrainingJob.get(training_job_name=name, session=session.boto_session)
    assert job.training_job_status == "Completed", job.failure_reason
    assert job.algorithm_specification.container_entrypoint == ["/bin/bash"]
    assert {c.channel_name for c in job.input_data_config} == {"code", "sm_drivers"}
    bucket, key = job.model_artifacts.s3_model_artifacts[5:].split("/", 1)
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        assert tar.extractfile("model.txt").read() == b"trained by ModelTrainer"
    assert _logged(logs, name, "epoch=3;")  # the hyperparameter reached the script through the SDK's driver
    assert _logged(logs, name, "cwd /opt/ml/input/data/code channels ['code', 'sm_drivers']")
