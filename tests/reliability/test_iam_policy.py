"""Least privilege, measured: the DAG runs once on the local stack with every AWS call recorded and attributed
(conftest.py). Every call must be allowed by its principal's policy in docs/, and every action and resource
those policies grant must be needed by some call, except the statements only real AWS exercises (listed below,
each with its reason)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from dag_run_recording import (
    ACCOUNT_ID,
    BUCKET,
    CONN_ACCESS_KEY,
    PREFIX,
    SOURCE_BUCKET,
    TRACKING_SERVER_NAME,
    RecordedRun,
)
from iam_check import Permission, Policy, UnmappedCall, required_permissions
from support import tar_archive

from inventory_pipeline.local_aws.stack import DEFAULT_REGION, LOCAL_ACCESS_KEY, MLFLOW_ARTIFACT_BUCKET, NOTIFY_TOPIC
from inventory_pipeline.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"
POLICIES = {"airflow": "airflow-policy.json", "execution_role": "iam-policy.json"}
# Servers that are not ours on AWS: a SageMaker managed MLflow tracking server stores artifacts with its own role.
NOT_OURS = {"mlflow_tracking_server"}


def our_calls(run: RecordedRun) -> list[dict]:
    return [c for c in run.calls() if c["principal"] not in NOT_OURS]


# Statements that only real AWS exercises (by Sid): the local stack runs the job without SageMaker's machinery.
REAL_AWS_ONLY = {
    "execution_role": {
        "ManagedRuleJobsReadJobOutput": "managed rules: Debugger's rule jobs read the job's output as this role; "
        "the local runner reads its own copy",
        "LogAgentFindsItsStream": "SageMaker's log agent looks its stream up; the local runner creates it directly",
        "PullImagesAuth": "SageMaker pulls the training/rule images from ECR; locally training_code/ runs as is",
        "PullTrainingAndRuleImages": "the same image pull (layers)",
        "SpotCheckpoints": "only use_spot jobs sync checkpoints (the Spot fault scenario in fault_scenarios.py "
        "runs one); the recorded run is on-demand",
    },
    "airflow": {
        "StopJobWhenTaskIsKilled": "only a killed task, or the teardown of a run whose wait ended with the job still "
        "running, stops its (paid) job; a good run never stops it (tests/integration/test_sensors.py stops one)",
        "AdoptOnlyOwnJobOnRetry": "only a retried train task meeting its run's job name, or the teardown about to "
        "stop a job, reads the job's tags",
        "PromoteInRegistry": "the recorded run's one-epoch model registers no earlier version to search, tag or move "
        "the alias from; tests/integration/test_dag_end_to_end.py promotes through the same Registry calls",
        "StorageGcDeletesOldData": "storage_gc deletes only what is older than its grace period and not kept; a "
        "single fresh run has nothing to delete (tests/integration/test_storage_gc.py deletes)",
    },
}
integration = [pytest.mark.integration, pytest.mark.slow]


def policy_values() -> dict[str, str]:
    """What docs/iam.md tells a deployment to fill in, here with the test run's names (moto's SNS account)."""
    return {
        "Bucket": BUCKET,
        "Prefix": PREFIX,
        "SourceBucket": SOURCE_BUCKET,
        "AccountId": ACCOUNT_ID,
        "Region": DEFAULT_REGION,
        "ExecutionRoleArn": Settings().role_arn,
        "DecisionsTopicArn": f"arn:aws:sns:{DEFAULT_REGION}:123456789012:{NOTIFY_TOPIC}",
        "RuntimeLimitSeconds": str(Settings().runtime_limit_s),
        "TrackingServerName": TRACKING_SERVER_NAME,
        "MlflowArtifactStore": MLFLOW_ARTIFACT_BUCKET,
    }


@dataclass
class Evaluation:
    policies: dict[str, Policy]
    denied: dict[str, Counter[str]]
    unmapped: Counter[str]


@pytest.fixture(scope="module")
def evaluation(recorded_run: RecordedRun) -> Evaluation:
    policies = {principal: Policy.load(DOCS / name, policy_values()) for principal, name in POLICIES.items()}
    denied: dict[str, Counter[str]] = defaultdict(Counter)
    unmapped: Counter[str] = Counter()
    for call in our_calls(recorded_run):
        policy = policies.get(call["principal"])
        if policy is None:
            continue  # an unknown principal fails test_every_call_is_attributed
        try:
            needed = required_permissions(call, DEFAULT_REGION, ACCOUNT_ID)
        except UnmappedCall as exc:
            unmapped[f"{call['principal']}: {exc}"] += 1
            continue
        for permission in needed:
            if not policy.allows(permission):
                denied[call["principal"]][f"{call['operation']} needs {permission}"] += 1
    return Evaluation(policies, denied, unmapped)


def _lines(counter: Counter[str], limit: int = 30) -> str:
    shown = [f"  {text} ({n} call{'s' if n > 1 else ''})" for text, n in sorted(counter.items())[:limit]]
    return "\n".join(shown + ([f"  ... and {len(counter) - limit} more"] if len(counter) > limit else []))


@pytest.mark.integration
@pytest.mark.slow
def test_the_recorded_run_succeeded(recorded_run: RecordedRun) -> None:
    assert recorded_run.result.ok, recorded_run.result.output[-4000:]
    assert recorded_run.summary["state"] == "success", recorded_run.summary["tasks"]


@pytest.mark.integration
@pytest.mark.slow
def test_every_call_is_attributed_to_a_principal_using_its_own_credentials(recorded_run: RecordedRun) -> None:
    calls = our_calls(recorded_run)
    expected_keys = {"airflow": CONN_ACCESS_KEY, "execution_role": LOCAL_ACCESS_KEY}
    wrong = Counter(
        f"{c['principal']} {c['service']}:{c['operation']} signed with {c['access_key']}"
        for c in calls
        if expected_keys.get(c["principal"]) != c["access_key"]
    )
    # e.g. a task building a boto3 client from the worker's ambient credentials instead of `aws_default`
    assert not wrong, "calls not made with their principal's credentials:\n" + _lines(wrong)
    # The training processes record too (self_hosted: they upload the debug output themselves).
    assert any(c["principal"] == "execution_role" and "/debug-output/" in c["params"].get("Key", "") for c in calls)
    assert {c["principal"] for c in calls} == set(expected_keys)


@pytest.mark.integration
@pytest.mark.slow
def test_every_call_is_allowed_by_its_principals_policy(evaluation: Evaluation) -> None:
    assert not evaluation.unmapped, "no IAM mapping for:\n" + _lines(evaluation.unmapped)
    report = "\n".join(
        f"{principal} ({POLICIES[principal]}) denies:\n{_lines(counter)}"
        for principal, counter in evaluation.denied.items()
        if counter
    )
    assert not report, report


@pytest.mark.integration
@pytest.mark.slow
def test_every_grant_is_needed_by_some_call(evaluation: Evaluation) -> None:
    gaps = [gap for principal, policy in evaluation.policies.items() for gap in policy.unused(REAL_AWS_ONLY[principal])]
    assert not gaps, "granted but never called (remove it, or allowlist it with a reason):\n" + "\n".join(gaps)
    # The allowlist stays honest: each entry names a statement, and one the local run indeed never needs.
    stale = [
        f"{principal} {sid}"
        for principal, sids in REAL_AWS_ONLY.items()
        for sid in sids
        if sid not in {s["Sid"] for s in evaluation.policies[principal].statements}
        or any(used[0] == sid for used in evaluation.policies[principal].used)
    ]
    assert not stale, f"allowlisted statements that are missing or used after all: {stale}"


# --- a training job that tries to change what judges it ---------------------------------------------------

# Runs as a training job's entry point, with the execution role's credentials: forges a ProfilerReport folder
# beside the judged job's output (a later "newest" name) and overwrites that job's report.
HOSTILE = """
import json, os, sys
import boto3
bucket, prefix, victim = sys.argv[sys.argv.index("--target") + 1].split(",")
s3 = boto3.client("s3")
forged = json.dumps({"RuleTriggered": 0, "Violations": 0, "Details": {"forged": True}}).encode()
writes = {
    f"{prefix}/training-jobs/{victim}/rule-output/ProfilerReport-99999999/profiler-output/profiler-reports/"
    "CPUBottleneck.json": forged,
    f"{prefix}/verdicts/{victim}/report.html": b"<p>all rules passed</p>",
}
for key, body in writes.items():
    s3.put_object(Bucket=bucket, Key=key, Body=body)
os.makedirs(os.environ["SM_MODEL_DIR"], exist_ok=True)
"""


@pytest.fixture(scope="module")
def hostile_calls(recorded_run: RecordedRun) -> list[dict]:
    """The S3 writes a hostile job made against the recorded run's job, as the recorder attributed them."""
    s3, sm = recorded_run.clients["s3"], recorded_run.clients["sagemaker"]
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/code/hostile.tar.gz", Body=tar_archive({"hostile.py": HOSTILE}))
    name = "inventory-hostile-job"
    sm.create_training_job(
        TrainingJobName=name,
        RoleArn=Settings().role_arn,
        AlgorithmSpecification={"TrainingImage": "pytorch-training:2.1-cpu-py310", "TrainingInputMode": "File"},
        HyperParameters={
            "sagemaker_program": '"hostile.py"',
            "target": f'"{BUCKET},{PREFIX},{recorded_run.job_name}"',
            "sagemaker_submit_directory": f'"s3://{BUCKET}/{PREFIX}/code/hostile.tar.gz"',
        },
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/{PREFIX}/training-jobs"},
        ResourceConfig={"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": 300},
    )
    sm.get_waiter("training_job_completed_or_stopped").wait(
        TrainingJobName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 150}
    )
    described = sm.describe_training_job(TrainingJobName=name)
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    later = recorded_run.all_calls()[recorded_run.calls_in_run :]
    return [c for c in later if c["operation"] == "PutObject" and recorded_run.job_name in c["params"].get("Key", "")]


@pytest.mark.integration
@pytest.mark.slow
def test_a_training_job_cannot_write_what_judges_it(recorded_run: RecordedRun, hostile_calls: list[dict]) -> None:
    from inventory_pipeline.reports.build import profiler_reports

    assert {c["principal"] for c in hostile_calls} == {"execution_role"} and len(hostile_calls) == 2, hostile_calls
    role = Policy.load(DOCS / POLICIES["execution_role"], policy_values())
    for call in hostile_calls:
        [permission] = required_permissions(call, DEFAULT_REGION, ACCOUNT_ID)
        assert not role.allows(permission), f"the execution role may write {permission}: a job can forge its verdict"
    # What the report reads is the evaluation our engine recorded (under verdicts/), not the forged folder.
    statuses = recorded_run.summary["xcom"]["wait_for_rules"]
    describe = {"TrainingJobName": recorded_run.job_name, **statuses}
    read = profiler_reports(recorded_run.clients["s3"], describe)
    assert read and "forged" not in str(read), read


# --- the evaluator itself (no DAG run) --------------------------------------------------------------------


def test_operations_map_to_the_iam_actions_aws_authorizes() -> None:
    def needed(operation: str, **params: object) -> list[str]:
        call = {"service": "s3", "operation": operation, "params": params}
        return [str(p) for p in required_permissions(call, "us-east-1", "1")]

    assert needed("HeadObject", Bucket="b", Key="k") == ["s3:GetObject on arn:aws:s3:::b/k"]
    assert needed("HeadBucket", Bucket="b") == ["s3:ListBucket on arn:aws:s3:::b"]
    assert needed("CopyObject", Bucket="d", Key="k2", CopySource="s/a%20b.jpg") == [
        "s3:GetObject on arn:aws:s3:::s/a b.jpg",
        "s3:PutObject on arn:aws:s3:::d/k2",
    ]
    params = {"TrainingJobName": "Inventory-X", "RoleArn": "arn:aws:iam::1:role/r", "Tags": True}
    create = {"service": "sagemaker", "operation": "CreateTrainingJob", "params": params}
    assert [p.action for p in required_permissions(create, "us-east-1", "1")] == [
        "sagemaker:CreateTrainingJob",
        "iam:PassRole",
        "sagemaker:AddTags",
    ]
    metrics = {"service": "cloudwatch", "operation": "PutMetricData", "params": {"Namespace": "/aws/sagemaker/X"}}
    assert [str(p) for p in required_permissions(metrics, "us-east-1", "1")] == [
        "cloudwatch:PutMetricData on * [cloudwatch:namespace=/aws/sagemaker/X]"
    ]
    with pytest.raises(UnmappedCall, match="s3:DeleteBucket"):
        needed("DeleteBucket", Bucket="b")


def test_the_evaluator_matches_wildcards_and_conditions_like_iam() -> None:
    policy = Policy.load(DOCS / "airflow-policy.json", policy_values())
    key = f"arn:aws:s3:::{BUCKET}/{PREFIX}/verdicts/job-1/report.html"
    assert policy.allows(Permission("s3:PutObject", key))
    assert not policy.allows(Permission("s3:PutObject", f"arn:aws:s3:::{BUCKET}/{PREFIX}/training-jobs/job-1/x"))
    role = Settings().role_arn
    assert policy.allows(Permission("iam:PassRole", role, (("iam:PassedToService", "sagemaker.amazonaws.com"),)))
    assert not policy.allows(Permission("iam:PassRole", role))  # a missing condition key fails the condition
    assert not policy.allows(Permission("iam:PassRole", role, (("iam:PassedToService", "ec2.amazonaws.com"),)))
    # the guardrails a second time: CreateTrainingJob only for the allowed types, up to the runtime limit
    job = f"arn:aws:sagemaker:{DEFAULT_REGION}:{ACCOUNT_ID}:training-job/inventory-x"

    def create(instance_type: str, runtime: int) -> Permission:
        keys = (("sagemaker:InstanceTypes", instance_type), ("sagemaker:MaxRuntimeInSeconds", str(runtime)))
        return Permission("sagemaker:CreateTrainingJob", job, keys)

    assert policy.allows(create("ml.c5.xlarge", 3600))
    assert not policy.allows(create("ml.p4d.24xlarge", 3600))
    assert not policy.allows(create("ml.c5.xlarge", Settings().runtime_limit_s + 1))
    assert not policy.allows(Permission("sagemaker:CreateTrainingJob", job))  # no instance type: denied
