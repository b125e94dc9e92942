"""Airflow sensors for the training job and its rule evaluations, shaped like the provider's.

`RuleEvaluationSensor` answers the provider's five questions (`non_terminal_states`, `failed_states`,
`get_sagemaker_response`, `state_from_response`, `get_failed_reason_from_response`): rule evaluations outlive
the training job, and the provider does not wait for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook
from airflow.providers.amazon.aws.sensors.sagemaker import SageMakerBaseSensor, SageMakerTrainingSensor

# Rule evaluation states as DescribeTrainingJob reports them.
RULE_NON_TERMINAL_STATES = frozenset({"InProgress", "Stopping"})
RULE_TERMINAL_STATES = frozenset({"NoIssuesFound", "IssuesFound", "Error", "Stopped"})
RULES_PENDING = "RulesInProgress"
RULES_DONE = "RulesComplete"


def stop_job_if_running(hook: SageMakerHook, job_name: str, log: Any) -> None:
    try:
        status = hook.describe_training_job(job_name)["TrainingJobStatus"]
        if status in SageMakerHook.non_terminal_states:
            log.info("Stopping training job %s (was %s) because the task was killed.", job_name, status)
            hook.conn.stop_training_job(TrainingJobName=job_name)
    except Exception:  # on_kill must not raise; say what happened instead
        log.exception("Could not stop training job %s", job_name)


def rule_statuses(description: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *description.get("DebugRuleEvaluationStatuses", []),
        *description.get("ProfilerRuleEvaluationStatuses", []),
    ]


class TrainingJobSensor(SageMakerTrainingSensor):
    """The provider's training sensor; `Failed` and `Stopped` fail the task with the job's own reason."""

    def get_failed_reason_from_response(self, response: dict) -> str:
        reason = response.get("FailureReason")
        if reason:
            return reason
        return f"job {response.get('TrainingJobStatus')} ({response.get('SecondaryStatus', 'no detail')})"

    def on_kill(self) -> None:
        stop_job_if_running(self.hook, self.job_name, self.log)


class RuleEvaluationSensor(SageMakerBaseSensor):
    """Wait until every debugger and profiler rule evaluation of a training job is in a terminal state.

    A rule in `Error` does not fail this sensor: the report task shows it as an error and the policy decides.
    """

    template_fields: Sequence[str] = (*SageMakerBaseSensor.template_fields, "job_name")

    def __init__(self, *, job_name: str, **kwargs: Any) -> None:
        super().__init__(resource_type="rule evaluations", **kwargs)
        self.job_name = job_name

    def non_terminal_states(self) -> set[str]:
        return {RULES_PENDING}

    def failed_states(self) -> set[str]:
        return set()

    def get_sagemaker_response(self) -> dict:
        return self.hook.describe_training_job(self.job_name)

    def state_from_response(self, response: dict) -> str:
        statuses = rule_statuses(response)
        pending = [
            s["RuleConfigurationName"]
            for s in statuses
            if s["RuleEvaluationStatus"] in RULE_NON_TERMINAL_STATES
        ]
        if pending:
            self.log.info("waiting for %d rule evaluation(s): %s", len(pending), ", ".join(pending))
            return RULES_PENDING
        for status in statuses:
            self.log.info("%s: %s", status["RuleConfigurationName"], status["RuleEvaluationStatus"])
        return RULES_DONE

    def get_failed_reason_from_response(self, response: dict) -> str:
        return "rule evaluations did not complete"
