"""The Amazon provider's SageMaker operator and sensors, with what a paid, unattended job needs.

Imported only when a task runs (it pulls in boto3). Shaped exactly like the provider's classes:
- `ReattachingTrainingOperator`: the provider's `SageMakerTrainingOperator`; a retry of the task re-attaches
  to the job its run already created instead of starting a second job or a timestamped twin, and so does a
  CreateTrainingJob whose answer was lost (botocore's retry then meets ResourceInUse).
- `is_transient`: which AWS errors are worth a task retry (the train task fails at once on the others).
- `ProviderTrainingSensor`: the provider's `SageMakerTrainingSensor`; `Stopped` without a FailureReason still
  fails with a reason, and killing the task stops the job.
- `ProviderRuleSensor`: a `SageMakerBaseSensor` answering the provider's five questions for the rule
  evaluations, which outlive the training job and which the provider does not wait for.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook
from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator
from airflow.providers.amazon.aws.sensors.sagemaker import SageMakerBaseSensor, SageMakerTrainingSensor
from botocore.exceptions import ClientError

from inventory_pipeline.links import TrainingJobLink

# Rule evaluation states as DescribeTrainingJob reports them.
RULE_NON_TERMINAL_STATES = frozenset({"InProgress", "Stopping"})
RULES_PENDING = "RulesInProgress"
RULES_DONE = "RulesComplete"


def is_not_found(exc: Exception) -> bool:
    """SageMaker answers DescribeTrainingJob for an unknown name with a ValidationException."""
    if not isinstance(exc, ClientError):
        return False
    error = exc.response.get("Error", {})
    return error.get("Code") == "ValidationException" and "not found" in error.get("Message", "").lower()


# What retrying can fix: throttling, a server-side 5xx, a connection that failed. (botocore has already
# retried these a few times when they reach us; a task retry minutes later often succeeds.) Anything else from
# SageMaker (ValidationException, AccessDenied, ResourceLimitExceeded, ...) fails the same way every time.
TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestThrottled", "SlowDown", "RequestLimitExceeded",
    "ProvisionedThroughputExceededException", "TransactionInProgressException", "PriorRequestNotComplete",
    "RequestTimeout", "RequestTimeoutException", "InternalFailure", "InternalError", "InternalServerError",
    "ServiceUnavailable",
})  # fmt: skip


def is_transient(exc: BaseException) -> bool:
    """True for AWS errors worth another task attempt: throttling, 5xx, connection and timeout errors."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    if isinstance(exc, (BotoConnectionError, HTTPClientError)):  # refused, reset, read/connect timeouts
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return exc.response.get("Error", {}).get("Code") in TRANSIENT_CODES or status >= 500
    return False


def is_resource_in_use(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "ResourceInUse"


def connection_region(aws_conn_id: str) -> str:
    """The region the connection's clients use (its `region_name`, else botocore's chain): the one source of
    the region for the request (image URIs, rule images) as for the API calls, so they cannot disagree."""
    hook = SageMakerHook(aws_conn_id=aws_conn_id)
    region = hook.conn_region_name or hook.get_session().region_name
    if not region:
        raise ValueError(f"the connection {aws_conn_id!r} names no region (set its extra 'region_name')")
    return region


def managed_rules_refused(exc: BaseException) -> bool:
    """SageMaker's answer to a request with Debugger rules from an account that cannot use them (closed to new
    customers since 2026-07-30): a ValidationException or access denial that names Debugger or the rules."""
    if not isinstance(exc, ClientError):
        return False
    error = exc.response.get("Error", {})
    code, message = error.get("Code", ""), error.get("Message", "").lower()
    refused = code in ("ValidationException", "AccessDeniedException", "AccessDenied")
    return refused and any(word in message for word in ("debugger", "debugrule", "rule configuration"))


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


class ReattachingTrainingOperator(SageMakerTrainingOperator):
    """Create the job named in `config`, or re-attach when this run already created it."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("wait_for_completion", False)
        # The sensor tails the job's log; here it would only hold the task for the hook's 30 s describe floor.
        kwargs.setdefault("print_log", False)
        # Should a same-named job appear between our check and the create, fail rather than create a twin.
        kwargs.setdefault("action_if_job_exists", "fail")
        super().__init__(**kwargs)

    def execute(self, context: Any) -> dict:
        job_name = self.config["TrainingJobName"]
        TrainingJobLink.persist(
            context,
            job_name=job_name,
            region_name=self.hook.conn_region_name or "us-east-1",
            partition=self.hook.conn_partition or "aws",
            local_endpoint=self.hook.conn_config.get_service_endpoint_url("sagemaker") or "",
        )
        existing = self._describe_or_none(job_name)
        if existing is not None:
            self._check_ownership(existing)
            self.log.info(
                "Training job %s already exists for this run (status %s): re-attaching instead of "
                "creating a second job.",
                job_name,
                existing["TrainingJobStatus"],
            )
            return self.serialize_result(job_name)
        try:
            return super().execute(context)
        except ClientError as exc:
            # CreateTrainingJob reached SageMaker but its answer was lost (a dropped connection); botocore
            # retried and SageMaker now says the name is taken: by this run's own job (names are unique per
            # run). Re-attach now, instead of failing into a task retry that would re-attach minutes later.
            if not is_resource_in_use(exc):
                raise
            existing = self._describe_or_none(job_name)
            if existing is None:
                raise
            self._check_ownership(existing)
            self.log.info("Training job %s was created by this attempt's first CreateTrainingJob call (its "
                          "answer was lost): re-attaching.", job_name)  # fmt: skip
            return self.serialize_result(job_name)

    def _check_ownership(self, existing: dict) -> None:
        """Adopt only this deployment's job for this run (ForeignJobError otherwise: never retried)."""
        from inventory_pipeline.training.ownership import check_ownership

        check_ownership(self.hook.conn, existing, self.config.get("Tags", []))

    def _describe_or_none(self, job_name: str) -> dict | None:
        try:
            return self.hook.describe_training_job(job_name)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise

    def on_kill(self) -> None:
        """Killing the task stops the job, so no instance keeps billing for a run nobody waits for."""
        name = (self.config or {}).get("TrainingJobName")
        if name:
            stop_job_if_running(self.hook, name, self.log)


class ProviderTrainingSensor(SageMakerTrainingSensor):
    def get_failed_reason_from_response(self, response: dict) -> str:
        reason = response.get("FailureReason")
        if reason:
            return reason
        return f"job {response.get('TrainingJobStatus')} ({response.get('SecondaryStatus', 'no detail')})"

    def on_kill(self) -> None:
        stop_job_if_running(self.hook, self.job_name, self.log)


class ProviderRuleSensor(SageMakerBaseSensor):
    """Rule evaluations are done when every status is terminal; `Error` is reported later, not raised here."""

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
