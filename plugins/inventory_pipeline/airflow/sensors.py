"""Airflow sensors for the training job and its rule evaluations: the Amazon provider's, subclassed.

- `TrainingJobSensor` is the provider's `SageMakerTrainingSensor`. In reschedule mode every poke is a new
  process, and the provider's log position (per CloudWatch stream: last timestamp read, events read at it)
  would start empty each time, re-printing the whole job log. The position is kept in the project bucket
  between pokes of one try, so each log line reaches the task log once. Its timeout is the job's own limit
  (MaxWaitTimeInSeconds with Spot, else MaxRuntimeInSeconds) plus a margin, read from the job: it never gives up
  on a job SageMaker would still let run. Killing or clearing it stops the job only where the deployment says
  so (`INVENTORY_STOP_JOB_WHEN_WAIT_KILLED`: a cleared wait would otherwise stop the job it meant to re-attach
  to); the `stop_unwatched_job` teardown stops a job nobody waits for any more.
- Both defer to `triggers.TrainingJobTrigger` where the deployment runs a triggerer (`deferrable=True`).
- `RuleEvaluationSensor` is a `SageMakerBaseSensor` answering the provider's five questions for the rule
  evaluations, which outlive the training job and which the provider does not wait for. When it times out, the
  rules still running are reported `NotEvaluated` (blocking only when the run lists them), not a failed run.

See `operators` for why importing the provider here keeps the DAG processor's parse cheap.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.sensors.sagemaker import SageMakerBaseSensor, SageMakerTrainingSensor
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

# Rule evaluation states as DescribeTrainingJob reports them.
RULE_NON_TERMINAL_STATES = frozenset({"InProgress", "Stopping"})
RULES_PENDING = "RulesInProgress"
RULES_DONE = "RulesComplete"
# On top of the job's own limit: provisioning, downloading the channels, uploading the model and SageMaker's stop
# window. The wait ends this long after the latest moment SageMaker itself would have ended the job.
JOB_WAIT_MARGIN_S = 2 * 3600


def job_wait_timeout_s(description: dict[str, Any]) -> int:
    """How long to wait for a job: its StoppingCondition (the Spot wait when it has one) plus the margin."""
    stop = description.get("StoppingCondition") or {}
    limit = stop.get("MaxWaitTimeInSeconds") or stop.get("MaxRuntimeInSeconds") or 86400
    return int(limit) + JOB_WAIT_MARGIN_S


class DeferrableWait:
    """`deferrable=True` (a deployment with a triggerer): poke once, then hand the wait to a
    `TrainingJobTrigger` instead of holding a worker slot or re-running a process per poll; on resume, one
    more poke reads what happened (and, for the job, its log from where the last read stopped)."""

    wait_for = "job"
    # True: the trigger ends the wait at the timeout with an event (execute_complete decides); False: Airflow
    # fails the task when the deferral times out.
    timeout_ends_wait = False
    stop_job_on_kill = False

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):
            return None
        from inventory_pipeline.airflow.triggers import TrainingJobTrigger

        trigger = TrainingJobTrigger(
            job_name=self.job_name,
            wait_for=self.wait_for,
            poll_interval_s=self.poke_interval,
            aws_conn_id=self.aws_conn_id,
            deadline=time.time() + self.timeout if self.timeout_ends_wait else None,
            stop_job_on_kill=self.stop_job_on_kill,
        )
        timeout = None if self.timeout_ends_wait else timedelta(seconds=self.timeout)
        self.defer(trigger=trigger, method_name="execute_complete", timeout=timeout)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> None:
        from airflow.sdk.exceptions import AirflowException

        if not self.poke(context):  # a failed job raises here, with its reason
            raise AirflowException(
                f"{self.job_name}: the trigger fired ({event}) but the {self.wait_for} wait is not over"
            )


class TrainingJobSensor(DeferrableWait, SageMakerTrainingSensor):
    """Wait for the training job; `Failed` and `Stopped` fail the task with the job's own reason."""

    def __init__(self, *, deferrable: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self._positions_loaded = False

    def execute(self, context: Any) -> Any:
        from inventory_pipeline.settings import settings_from

        self.stop_job_on_kill = settings_from(context["params"]).stop_job_when_wait_killed
        self.timeout = job_wait_timeout_s(self.hook.describe_training_job(self.job_name))
        self.log.info(
            "waiting up to %d s for %s (its stopping condition plus %d s)",
            self.timeout,
            self.job_name,
            JOB_WAIT_MARGIN_S,
        )
        return super().execute(context)

    def poke(self, context: Any) -> bool:
        if not self.print_log:
            return super().poke(context)
        store = LogPositionStore.for_task(context, self.task_id, self.job_name)
        if not self._positions_loaded:  # a reschedule poke is a new process: pick up where the last one stopped
            self.positions.update(store.load())
            self._positions_loaded = True
        before = dict(self.positions)
        try:
            return super().poke(context)
        finally:
            if self.positions != before:
                store.save(self.positions)

    def get_sagemaker_response(self) -> dict:
        if not self.print_log:
            return super().get_sagemaker_response()
        from airflow.providers.amazon.aws.hooks.sagemaker import LogState

        if self.log_resource_inited:
            # While it prints the log, the provider asks for the job's status at most every 30 s, whatever the
            # poke interval: the end of a job was seen up to 30 s late. Ask at every poke instead (one
            # DescribeTrainingJob per poke, as without print_log).
            self.last_describe_job_call = min(self.last_describe_job_call, time.monotonic() - 30)
        response = super().get_sagemaker_response()
        if self.state == LogState.JOB_COMPLETE:  # the job just ended: read its log to the end now, not a poke later
            self.state, _, _ = self.hook.describe_training_job_with_log(
                self.job_name,
                self.positions,
                self.stream_names,
                self.instance_count,
                self.state,
                self.last_description,
                self.last_describe_job_call,
            )
        return response

    def get_failed_reason_from_response(self, response: dict) -> str:
        reason = response.get("FailureReason")
        if reason:
            return reason
        return f"job {response.get('TrainingJobStatus')} ({response.get('SecondaryStatus', 'no detail')})"

    def on_kill(self) -> None:
        if not self.stop_job_on_kill:
            self.log.info(
                "Stopped waiting for training job %s; the job keeps running (INVENTORY_STOP_JOB_WHEN_"
                "WAIT_KILLED is off; the stop_unwatched_job teardown stops it if nobody waits).",
                self.job_name,
            )
            return
        from inventory_pipeline.training.stop import stop_if_running

        try:
            stop_if_running(self.hook.conn, self.job_name, f"the task {self.task_id!r} waiting for it was killed")
        except Exception:  # on_kill must not raise; say what happened instead
            self.log.exception("Could not stop training job %s", self.job_name)


class LogPositionStore:
    """Where a sensor try keeps its CloudWatch read position between reschedule pokes: a small JSON object
    in the project bucket (XCom is cleared at every reschedule; S3 is reachable from every worker)."""

    def __init__(self, s3: Any, bucket: str, key: str) -> None:
        self.s3, self.bucket, self.key = s3, bucket, key

    @classmethod
    def for_task(cls, context: Any, task_id: str, job_name: str) -> LogPositionStore:
        from inventory_pipeline.aws.clients import s3_client
        from inventory_pipeline.settings import settings_from

        settings = settings_from(context["params"])
        try_number = getattr(context["ti"], "try_number", 0)
        # Per try: a cleared or retried sensor prints the whole log again, into its own try's log.
        key = f"{settings.root}airflow/log-positions/{job_name}/{task_id}-try-{try_number}.json"
        return cls(s3_client(settings), settings.bucket, key)

    def load(self) -> dict[str, Any]:
        from airflow.providers.amazon.aws.hooks.sagemaker import Position

        from inventory_pipeline.aws.s3_paths import is_missing

        try:
            stored = json.loads(self.s3.get_object(Bucket=self.bucket, Key=self.key)["Body"].read())
        except Exception as exc:
            if is_missing(exc):
                return {}
            raise
        return {stream: Position(timestamp=ts, skip=skip) for stream, (ts, skip) in stored.items()}

    def save(self, positions: dict[str, Any]) -> None:
        body = json.dumps({stream: [p.timestamp, p.skip] for stream, p in positions.items()})
        self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=body.encode(), ContentType="application/json")


class RuleEvaluationSensor(DeferrableWait, SageMakerBaseSensor):
    """Wait until every debugger and profiler rule evaluation of the job is terminal (managed rules).

    With `rules_mode="self_hosted"` there is nothing to wait for at SageMaker: this task runs our rule
    engine on the job's S3 output instead, and writes the same rule-output files. `Error` is reported by
    parse_rule_reports, not raised here.
    """

    template_fields: Sequence[str] = aws_template_fields("job_name", "rules_mode")

    wait_for = "rules"

    def __init__(self, *, job_name: str, rules_mode: str = "managed", deferrable: bool = False, **kwargs: Any) -> None:
        super().__init__(resource_type="rule evaluations", **kwargs)
        self.job_name = job_name
        self.rules_mode = rules_mode
        self.deferrable = deferrable

    timeout_ends_wait = True

    def execute(self, context: Any) -> Any:
        if self.rules_mode == "self_hosted":
            from inventory_pipeline.airflow.tasks import evaluate_rules_self_hosted

            return evaluate_rules_self_hosted(context["params"], self.job_name)
        from airflow.sdk.exceptions import AirflowSensorTimeout

        try:
            return super().execute(context)
        except AirflowSensorTimeout:
            self.unfinished_are_not_evaluated()
            return None

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> None:
        if (event or {}).get("timed_out"):
            self.unfinished_are_not_evaluated()
            return None
        return super().execute_complete(context, event)

    def unfinished_are_not_evaluated(self) -> None:
        """The wait is over: what still runs has no result, which the report reads as NotEvaluated."""
        statuses = rule_statuses(self.hook.describe_training_job(self.job_name))
        pending = [
            s["RuleConfigurationName"] for s in statuses if s["RuleEvaluationStatus"] in RULE_NON_TERMINAL_STATES
        ]
        self.log.warning(
            "rule evaluations still running after %d s: %s; they are reported NotEvaluated (which "
            "blocks only the rules the run lists in fail_on_rules)",
            self.timeout,
            ", ".join(pending) or "none",
        )

    def non_terminal_states(self) -> set[str]:
        return {RULES_PENDING}

    def failed_states(self) -> set[str]:
        return set()

    def get_sagemaker_response(self) -> dict:
        return self.hook.describe_training_job(self.job_name)

    def state_from_response(self, response: dict) -> str:
        statuses = rule_statuses(response)
        pending = [
            s["RuleConfigurationName"] for s in statuses if s["RuleEvaluationStatus"] in RULE_NON_TERMINAL_STATES
        ]
        if pending:
            self.log.info("waiting for %d rule evaluation(s): %s", len(pending), ", ".join(pending))
            return RULES_PENDING
        for status in statuses:
            self.log.info("%s: %s", status["RuleConfigurationName"], status["RuleEvaluationStatus"])
        return RULES_DONE

    def get_failed_reason_from_response(self, response: dict) -> str:
        return "rule evaluations did not complete"


def rule_statuses(description: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *description.get("DebugRuleEvaluationStatuses", []),
        *description.get("ProfilerRuleEvaluationStatuses", []),
    ]
