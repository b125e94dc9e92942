"""No orphaned paid work, no failed run for a slow rule (issue 25, point 6): the job wait lasts as long as the
job may, and a rule wait that times out reports the unfinished rules NotEvaluated instead of failing."""

from __future__ import annotations

from types import SimpleNamespace

from inventory_pipeline.airflow.sensors import (
    JOB_WAIT_MARGIN_S,
    RuleEvaluationSensor,
    TrainingJobSensor,
    job_wait_timeout_s,
)
from inventory_pipeline.reports.findings import NOT_EVALUATED, findings_from_job

OK = {"ResponseMetadata": {"HTTPStatusCode": 200}}


def _context() -> dict:
    return {"params": {}, "ti": SimpleNamespace(try_number=1, task_id="t")}


def test_the_job_wait_lasts_as_long_as_sagemaker_lets_the_job_run() -> None:
    on_demand = {"StoppingCondition": {"MaxRuntimeInSeconds": 3 * 86400}}
    spot = {"StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 5 * 86400}}
    assert job_wait_timeout_s(on_demand) == 3 * 86400 + JOB_WAIT_MARGIN_S  # beyond the old fixed 12 h
    assert job_wait_timeout_s(spot) == 5 * 86400 + JOB_WAIT_MARGIN_S


def test_the_training_sensor_takes_its_timeout_from_the_job() -> None:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    described = {
        **OK,
        "TrainingJobStatus": "Completed",
        "SecondaryStatus": "Completed",
        "TrainingStartTime": now,
        "TrainingEndTime": now,
        "ResourceConfig": {"InstanceCount": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 90000},
    }
    sensor = TrainingJobSensor(task_id="wait_for_training", job_name="j", print_log=False, timeout=60)
    sensor.__dict__["hook"] = SimpleNamespace(describe_training_job=lambda name: described)
    sensor.execute(_context())
    assert sensor.timeout == 90000 + JOB_WAIT_MARGIN_S


def test_a_rule_wait_that_times_out_leaves_the_unfinished_rules_not_evaluated() -> None:
    described = {
        **OK,
        "TrainingJobName": "j",
        "TrainingJobStatus": "Completed",
        "DebugRuleEvaluationStatuses": [
            {"RuleConfigurationName": "Overfit", "RuleEvaluationStatus": "InProgress"},
            {"RuleConfigurationName": "VanishingGradient", "RuleEvaluationStatus": "NoIssuesFound"},
        ],
    }
    sensor = RuleEvaluationSensor(
        task_id="wait_for_rules", job_name="j", rules_mode="managed", mode="poke", timeout=0.5, poke_interval=0.1
    )
    sensor.__dict__["hook"] = SimpleNamespace(describe_training_job=lambda name: described)
    assert sensor.execute(_context()) is None  # not AirflowSensorTimeout: the run goes on to the report
    outcomes = {f.rule: f.status for f in findings_from_job(described, {})}
    assert outcomes["Overfit"] == NOT_EVALUATED and outcomes["VanishingGradient"] == "NoIssuesFound"
    # deferred: the trigger's timed-out event ends the wait the same way
    assert sensor.execute_complete(_context(), {"timed_out": True, "pending": ["Overfit"]}) is None
