"""The whole DAG under `airflow dags test` against the local stack: the provider's real SageMaker operator and
sensor drive a local job to Completed, rules are evaluated, the report is written, the model is promoted; a
retried train task re-attaches instead of starting a second job."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from inventory_pipeline.airflow_runner import airflow_bin, airflow_env, dags_test, db_migrate
from inventory_pipeline.aws_clients import make_client
from inventory_pipeline.dataset.seed import seed_synthetic

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CREDS = {"aws_access_key_id": "local-access-key", "aws_secret_access_key": "local-secret-key"}
TASKS = ["select_source", "copy_images", "split_dataset", "package_code", "train", "wait_for_training",
         "wait_for_rules", "parse_rule_reports", "evaluate_and_promote"]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(local_stack, tmp_path_factory):
    s3 = make_client("s3", local_stack.endpoints["s3"], local_stack.region, **CREDS)
    s3.create_bucket(Bucket="dag-project")
    seed_synthetic(s3, "dag-source", images=300, seed=5)
    home = tmp_path_factory.mktemp("airflow-home")
    env = airflow_env(home, {**local_stack.env(), "INVENTORY_BUCKET": "dag-project", "INVENTORY_POKE_INTERVAL_S": "3",
                             "INVENTORY_REPORT_DIR": str(home / "reports")})  # fmt: skip
    db_migrate(env)
    conf = {"source_bucket": "dag-source", "file_list": "s3://dag-source/file_list.json", "model": "small_cnn",
            "epochs": 2, "instance_count": 1}  # fmt: skip
    result = dags_test(env, conf, log_path=home / "dags-test.log")
    summary = subprocess.run([sys.executable, "-m", "inventory_pipeline.run_summary"], env=env, capture_output=True,
                             text=True, check=True)  # fmt: skip
    return {
        "result": result,
        "run": json.loads(summary.stdout.strip().splitlines()[-1]),
        "env": env,
        "s3": s3,
        "sm": make_client("sagemaker", local_stack.endpoints["sagemaker"], local_stack.region, **CREDS),
    }


def test_every_task_succeeds(finished_run):
    run = finished_run["run"]
    assert finished_run["result"].ok, finished_run["result"].output[-4000:]
    assert run["state"] == "success"
    assert {t: run["tasks"].get(t) for t in TASKS} == dict.fromkeys(TASKS, "success")


def test_the_job_ran_with_rules_and_the_report_and_promotion_followed(finished_run):
    xcom, s3, sm = finished_run["run"]["xcom"], finished_run["s3"], finished_run["sm"]
    job_name = xcom["train"]["Training"]["TrainingJobName"]
    job = sm.describe_training_job(TrainingJobName=job_name)
    assert job["TrainingJobStatus"] == "Completed"
    statuses = job["DebugRuleEvaluationStatuses"] + job["ProfilerRuleEvaluationStatuses"]
    assert sorted(s["RuleConfigurationName"] for s in statuses) == [
        "Overfit", "Overtraining", "PoorWeightInitialization", "ProfilerReport", "VanishingGradient"]  # fmt: skip
    assert all(s["RuleEvaluationStatus"] in ("IssuesFound", "NoIssuesFound") for s in statuses), statuses
    report = xcom["parse_rule_reports"]
    html = open(report["html_path"]).read()
    assert job_name in html and "ProfilerReport" in html and "data:image/png;base64," in html
    assert report["metrics"]["accuracy"] is not None
    promotion = xcom["evaluate_and_promote"]
    assert promotion["promoted"] is True and promotion["reason"].startswith("first model")
    champion = json.loads(s3.get_object(Bucket="dag-project", Key="abid/models/champion/metrics.json")["Body"].read())
    assert champion["job"] == job_name
    history = s3.get_object(Bucket="dag-project", Key="abid/models/history.jsonl")["Body"].read().decode()
    assert len(history.splitlines()) == 1


def test_a_retried_train_task_reattaches_instead_of_starting_a_second_job(finished_run):
    env, sm = finished_run["env"], finished_run["sm"]
    run_id = finished_run["run"]["dag_run_id"]
    before = sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]
    proc = subprocess.run([airflow_bin(), "tasks", "test", "inventory_retraining", "train", run_id], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "re-attaching instead of creating a second job" in proc.stdout + proc.stderr
    after = sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]
    assert len(after) == len(before)
