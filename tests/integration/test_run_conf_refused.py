"""A run conf that names anything but a declared Param (here the deployment's bucket and role), or Params the
settings refuse, is refused by the DAG's first task, before any data is read or any training job exists; so is one
beyond a limit the deployment sets as an Airflow Variable in the metadata DB (a task lists the `INVENTORY_*`
Variables first and asks only for those, so this proves the listing finds it).

The three runs go through one Airflow process (`runner.DagRunSession`, as `make demo` runs its weeks): each run is
read back in that process, and a run the DAG never created is never reported as the one before it."""

from __future__ import annotations

import subprocess

import pytest

from inventory_pipeline.airflow.runner import DagRunSession, airflow_bin, airflow_env
from inventory_pipeline.aws.clients import make_client
from inventory_pipeline.training.naming import job_name_for_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CREDS = {"aws_access_key_id": "local-access-key", "aws_secret_access_key": "local-secret-key"}


def test_a_conf_overriding_the_deployment_is_refused_before_any_work(local_stack, tmp_path):
    s3 = make_client("s3", local_stack.endpoints["s3"], local_stack.region, **CREDS)
    s3.create_bucket(Bucket="conf-project")
    # Its own registered model: the session's MLflow server is shared, and the gate keeps the bucket's deployable
    # copy following the registry's champion.
    env = airflow_env(
        tmp_path,
        {
            **local_stack.env(),
            "INVENTORY_BUCKET": "conf-project",
            "INVENTORY_REGISTERED_MODEL": "inventory-counting-conf-refused",
        },
    )
    conf = {
        "epochs": 1,
        "model": "small_cnn",
        "role_arn": "arn:aws:iam::000000000000:role/other",
        "bucket": "someone-elses-bucket",
    }
    with DagRunSession(env) as airflow:
        result = airflow.run(conf, tmp_path / "week-1.log", logical_date="2026-03-02")
        unmeasurable = airflow.run(
            {"model": "small_cnn", "fail_on_rules": ["LowGPUUtilization"]}, tmp_path / "week-2.log", "2026-03-09"
        )
        not_created = airflow.run({"epochs": "many"}, tmp_path / "week-3.log", "2026-03-16")
        limit = [airflow_bin(), "variables", "set", "INVENTORY_MAX_INSTANCE_COUNT", "1"]
        subprocess.run(limit, env=env, check=True, capture_output=True)
        beyond_limit = airflow.run({"model": "small_cnn", "instance_count": 2}, tmp_path / "week-4.log", "2026-03-23")
    run = result.run
    assert run is not None

    assert not result.ok and run["state"] == "failed"
    assert run["tasks"]["check_run_conf"] == "failed"
    assert "run conf has undeclared key(s) bucket, role_arn" in result.output
    # Nothing downstream ran: no source read, no code uploaded, no job.
    for task in ("select_source", "package_code", "check_lineage", "train", "wait_for_training"):
        assert run["tasks"].get(task) in ("upstream_failed", None), (task, run["tasks"])
    # The weekly gc ran on the deployment's bucket: the conf's `bucket` was never read.
    assert run["tasks"]["storage_gc"] == "success", run["tasks"]
    # The only thing written is the gate's record of the run's one decision, `failed`, naming the keys
    # (with its announcement in the outbox, and the champion lease the gate took to apply it).
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="conf-project").get("Contents", [])]
    recorded = ("abid/models/decisions/", "abid/models/outbox/", "abid/models/champion.lease")
    assert any(k.startswith("abid/models/decisions/") for k in keys), keys
    assert all(key.startswith(recorded) for key in keys), keys
    decision = run["xcom"].get("evaluate_and_promote") or {}
    assert "decision failed: check_run_conf failed" in result.output and "role_arn" in result.output, decision
    sm = make_client("sagemaker", local_stack.endpoints["sagemaker"], local_stack.region, **CREDS)
    job = job_name_for_run("inventory_retraining", run["dag_run_id"])
    assert sm.list_training_jobs(NameContains=job)["TrainingJobSummaries"] == []

    # The second run, in the same process: its own run, refused for a rule a CPU instance can never measure.
    second = unmeasurable.run
    assert second is not None and second["dag_run_id"] != run["dag_run_id"], second
    assert not unmeasurable.ok and second["tasks"]["check_run_conf"] == "failed", second["tasks"]
    assert "LowGPUUtilization" in unmeasurable.output and "Performing upgrade" not in unmeasurable.output
    # A conf the Params' schema refuses creates no run: nothing is read back, and the run before is not reported.
    assert not not_created.ok and not_created.run is None, not_created.output[-2000:]
    # The deployment's limit, an Airflow Variable (no environment variable of that name is set): refused.
    assert not beyond_limit.ok and beyond_limit.run["tasks"]["check_run_conf"] == "failed", beyond_limit.run
    assert "above this deployment's limit of 1 (INVENTORY_MAX_INSTANCE_COUNT)" in beyond_limit.output
