"""The whole DAG under `airflow dags test` against the local stack: the provider's real SageMaker operator and
sensor drive a local job to Completed, rules are evaluated, the report is written, the deployment wants every
promotion approved, a reviewer approves it through Airflow's REST API, the model is promoted and registered in
MLflow, the decision is announced; a second week with the same data skips training; a forced retrain scores the
champion on the same test images; a retried train task re-attaches instead of starting a second job."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from inventory_pipeline.airflow.run_summary import read_latest_run
from inventory_pipeline.airflow.runner import airflow_bin, airflow_env, dags_test, db_migrate
from inventory_pipeline.aws.clients import make_client
from inventory_pipeline.dataset.seed import seed_synthetic
from inventory_pipeline.demo.reviewer import Reviewer
from inventory_pipeline.training.naming import job_name_for_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CREDS = {"aws_access_key_id": "local-access-key", "aws_secret_access_key": "local-secret-key"}
TASKS = [
    "check_run_conf",
    "select_source",
    "copy_images",
    "split_dataset",
    "package_code",
    "check_lineage",
    "train",
    "wait_for_training",
    "wait_for_rules",
    "parse_rule_reports",
    "review_promotion",
    "evaluate_and_promote",
    "storage_gc",
    "stop_unwatched_job",
]
MODEL = "inventory-counting-dag-e2e"
TRAINING = ["train", "wait_for_training", "wait_for_rules", "parse_rule_reports"]


@pytest.fixture(scope="module")
def finished_run(local_stack, tmp_path_factory):
    s3 = make_client("s3", local_stack.endpoints["s3"], local_stack.region, **CREDS)
    s3.create_bucket(Bucket="dag-project")
    # enough photos and epochs for small_cnn to beat the trivial answer (measured: 0.55 vs 0.20 on 49 test photos)
    seed_synthetic(s3, "dag-source", images=500, seed=5)
    home = tmp_path_factory.mktemp("airflow-home")
    env = airflow_env(
        home,
        {
            **local_stack.env(),
            "INVENTORY_BUCKET": "dag-project",
            "INVENTORY_POKE_INTERVAL_S": "3",
            # its own registered model: other tests of the session share the MLflow server
            "INVENTORY_REGISTERED_MODEL": MODEL,
            # every promotion waits for a person: the reviewer answers through the REST API
            "INVENTORY_APPROVAL_WHEN": "always",
            "INVENTORY_REPORT_DIR": str(home / "reports"),
        },
    )
    db_migrate(env)
    conf = {
        "source_bucket": "dag-source",
        "file_list": "s3://dag-source/file_list.json",
        "model": "small_cnn",
        "epochs": 8,
        "lr": 0.004,
        "instance_count": 1,
    }
    sqs = make_client("sqs", local_stack.endpoints["sqs"], local_stack.region, **CREDS)
    weeks = []
    with Reviewer(env) as reviewer:  # the API server it starts shares this Airflow home's metadata DB
        for week, (date, extra) in enumerate(
            [("2026-02-02", {}), ("2026-02-09", {}), ("2026-02-16", {"force_retrain": True})], start=1
        ):
            answered = len(reviewer.answered)
            result = dags_test(
                env,
                {**conf, **extra},
                log_path=home / f"dags-test-{week}.log",
                logical_date=date,
                on_line=reviewer.on_line,
            )
            summary = read_latest_run(env)
            queue = local_stack.provisioned["queue_url"]
            messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, MessageAttributeNames=["All"]).get(
                "Messages", []
            )
            for message in messages:
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            ours = [
                m
                for m in messages  # the session's queue also gets other tests' announcements
                if m.get("MessageAttributes", {}).get("registered_model", {}).get("StringValue") == MODEL
            ]
            weeks.append(
                {
                    "result": result,
                    "run": summary,
                    "messages": ours,
                    "answered": reviewer.answered[answered:],
                }
            )
    return {
        **weeks[0],
        "weeks": weeks,
        "env": env,
        "s3": s3,
        "sm": make_client("sagemaker", local_stack.endpoints["sagemaker"], local_stack.region, **CREDS),
        "tracking_uri": local_stack.endpoints["mlflow"],
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
        "Overfit",
        "Overtraining",
        "PoorWeightInitialization",
        "ProfilerReport",
        "VanishingGradient",
    ]
    assert all(s["RuleEvaluationStatus"] in ("IssuesFound", "NoIssuesFound") for s in statuses), statuses
    # a healthy run: the debugger rules, sized to its schedule from the dataset's counts, stay quiet
    sent = {r["RuleConfigurationName"]: r["RuleParameters"] for r in job["DebugRuleConfigurations"]}
    assert sent["Overfit"]["ratio_threshold"] == "0.25" and int(sent["Overtraining"]["patience_train"]) > 5
    debugger = {s["RuleConfigurationName"]: s["RuleEvaluationStatus"] for s in job["DebugRuleEvaluationStatuses"]}
    assert set(debugger.values()) == {"NoIssuesFound"}, job["DebugRuleEvaluationStatuses"]
    report = xcom["parse_rule_reports"]
    html = open(report["html_path"]).read()
    assert job_name in html and "ProfilerReport" in html and "data:image/png;base64," in html
    assert "What the data changed" in html and report["data"]["class_mix"]["train"]  # the data report section
    # the job's utilisation over time, and the right-sizing it supports (issue 27: a demo report had lost both)
    assert 'alt="CPU, memory and disk over time"' in html and "no CPU utilisation was measured" not in html
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in job["InputDataConfig"]}
    assert channels["train"]["S3DataType"] == "ManifestFile"  # train.py read the packed dataset version
    assert xcom["storage_gc"]["kept_versions"] == [xcom["split_dataset"]["version"]]
    assert report["metrics"]["accuracy"] is not None
    decision = xcom["evaluate_and_promote"]
    assert decision["status"] == "promoted" and decision["reason"].startswith("first model")
    # it beat the trivial answer, waited for a person, and the reviewer's REST answer is on the record
    assert decision["baseline"]["passed"] and decision["baseline"]["paired"]["p_value"] < 0.05
    # the source's class counts reached the job as its prior, and the floor was judged at that prior (issue 24)
    source = xcom["select_source"]["source_counts"]
    population = ",".join(str(source[str(c)]) for c in range(1, 6))
    assert json.loads(job["HyperParameters"]["population-counts"]) == population
    at_prior = decision["baseline"]["at_prior"]
    assert at_prior["candidate"]["accuracy"] > at_prior["majority"]["accuracy"]
    assert decision["approval"]["answer"] == "Promote" and decision["approval"]["by"] == "reviewer"
    assert "Approved by reviewer" in decision["reason"] and not decision["approval"]["timed_out"]
    assert finished_run["answered"] == [
        {
            "run_id": finished_run["run"]["dag_run_id"],
            "task_id": "review_promotion",
            "subject": f"Promote {decision['job']}?",
            "answer": "Promote",
            "by": "reviewer",
        }
    ]
    champion = json.loads(s3.get_object(Bucket="dag-project", Key="abid/models/champion/metrics.json")["Body"].read())
    assert champion["job"] == job_name and champion["version"] == decision["registry"]["version"]
    key = f"abid/models/decisions/{job_name}/decision.json"
    record = json.loads(s3.get_object(Bucket="dag-project", Key=key)["Body"].read())
    assert record["status"] == "promoted" and record["lineage"]["dataset_version"] == xcom["split_dataset"]["version"]
    # the deployment's limits the run was checked against are on the record and in the report
    limits = record["guardrails"]
    assert limits["max_instance_count"] == 4 and "ml.c5.xlarge" in limits["allowed_instance_types"]
    assert "The deployment's limits this run stayed within: 4 instance(s)" in html


def test_the_candidate_is_registered_tracked_and_announced(finished_run):
    from mlflow import MlflowClient

    xcom = finished_run["run"]["xcom"]
    decision = xcom["evaluate_and_promote"]
    client = MlflowClient(finished_run["tracking_uri"])
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == decision["registry"]["version"] == "1"
    assert champion.tags["job"] == xcom["train"]["Training"]["TrainingJobName"]
    assert champion.tags["dataset_version"] == xcom["split_dataset"]["version"]
    assert champion.tags["code_sha256"] == xcom["package_code"]["sha256"]
    run = client.get_run(decision["tracking"]["run_id"])
    assert run.data.params["model"] == "small_cnn" and run.data.tags["decision"] == "promoted"
    assert "test_accuracy" in run.data.metrics and run.data.tags["rule.Overfit"] in ("IssuesFound", "NoIssuesFound")
    assert len(client.get_metric_history(run.info.run_id, "valid_loss")) == 8  # one per epoch
    assert "report.html" in [a.path for a in client.list_artifacts(run.info.run_id)]
    [message] = finished_run["messages"]
    assert message["MessageAttributes"]["decision"]["StringValue"] == "promoted"
    assert "Decision: promoted" in message["Body"] and "MLflow run:" in message["Body"]


def test_an_unchanged_week_skips_training_and_records_it(finished_run):
    week2 = finished_run["weeks"][1]
    assert week2["result"].ok, week2["result"].output[-4000:]
    run = week2["run"]
    assert all(run["tasks"][t] == "skipped" for t in TRAINING), run["tasks"]
    decision = run["xcom"]["evaluate_and_promote"]
    assert decision["status"] == "skipped_unchanged" and "equal the champion's" in decision["reason"]
    week2_job = job_name_for_run("inventory_retraining", run["dag_run_id"])
    assert decision["job"] == week2_job
    assert not finished_run["sm"].list_training_jobs(NameContains=week2_job)["TrainingJobSummaries"]
    assert week2["messages"][0]["MessageAttributes"]["decision"]["StringValue"] == "skipped_unchanged"


def test_a_forced_retrain_compares_candidate_and_champion_on_the_same_images(finished_run):
    week3 = finished_run["weeks"][2]
    assert week3["result"].ok, week3["result"].output[-4000:]
    xcom = week3["run"]["xcom"]
    decision = xcom["evaluate_and_promote"]
    assert decision["status"] in ("promoted", "not_better")
    candidate, champion = decision["candidate"], decision["champion"]
    assert champion["version"] == "1" and champion["accuracy"] is not None
    assert candidate["dataset_version"] == champion["dataset_version"] == xcom["split_dataset"]["version"]
    assert candidate["test_images"] == champion["test_images"] > 0


def test_a_retried_train_task_reattaches_instead_of_starting_a_second_job(finished_run):
    env, sm = finished_run["env"], finished_run["sm"]
    run_id = finished_run["run"]["dag_run_id"]
    before = sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]
    proc = subprocess.run(
        [airflow_bin(), "tasks", "test", "inventory_retraining", "train", run_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "re-attaching instead of creating a second job" in proc.stdout + proc.stderr
    after = sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]
    assert len(after) == len(before)


def test_a_blocking_rule_the_instance_cannot_evaluate_is_refused_before_any_work_and_recorded(finished_run):
    env, sm = finished_run["env"], finished_run["sm"]
    jobs_before = len(sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"])
    conf = {
        "source_bucket": "dag-source",
        "file_list": "s3://dag-source/file_list.json",
        "model": "small_cnn",
        "epochs": 2,
        "instance_count": 1,
        "fail_on_rules": ["LowGPUUtilization"],
    }
    log_path = Path(env["AIRFLOW_HOME"]) / "dags-test-refused.log"
    result = dags_test(env, conf, log_path=log_path, logical_date="2026-02-23")
    summary = read_latest_run(env)
    run = summary
    assert not result.ok and run["state"] == "failed"
    # Refused once, by the first task: nothing downstream ran, so nothing failed again or waited to retry.
    assert run["tasks"]["check_run_conf"] == "failed" and run["tasks"]["evaluate_and_promote"] == "failed"
    assert {run["tasks"][t] for t in ("select_source", "package_code", "train")} == {"upstream_failed"}
    assert run["tasks"]["storage_gc"] == "skipped"  # gc never runs on settings the run was refused for
    decision = run["xcom"]["evaluate_and_promote"]
    assert decision["status"] == "failed" and decision["reason"].startswith("check_run_conf failed")
    assert "LowGPUUtilization" in decision["reason"] and "ml.c5.xlarge has no GPU" in decision["reason"]
    assert len(sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]) == jobs_before
