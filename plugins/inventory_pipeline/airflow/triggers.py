"""Triggers for the deferrable waits (deployments that run a triggerer): the job and its rule evaluations.

One trigger polls DescribeTrainingJob asynchronously (the provider's async hook, so the connection's endpoints
apply) until what it waits for is terminal, and fires once with the job's status. It fires on `Failed` and
`Stopped` too: the resumed task reads the job's log from where the last read stopped and fails with the job's
own reason, which the provider's waiter trigger would swallow (it raises in the triggerer, and the log is lost).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

JOB_NON_TERMINAL = frozenset({"InProgress", "Stopping"})
RULE_NON_TERMINAL = frozenset({"InProgress", "Stopping"})
WAIT_FOR = ("job", "rules")


class TrainingJobTrigger(BaseTrigger):
    """Fire when the job (`wait_for="job"`) or all its rule evaluations (`wait_for="rules"`) are terminal."""

    def __init__(
        self,
        job_name: str,
        wait_for: str = "job",
        poll_interval_s: float = 60,
        aws_conn_id: str | None = "aws_default",
        deadline: float | None = None,
        stop_job_on_kill: bool = False,
    ) -> None:
        """`deadline` (epoch seconds): fire `{"timed_out": True, ...}` then, instead of waiting on. `stop_job_on_kill`:
        a user killing the deferred task (mark failed, clear) stops the job it waited for."""
        super().__init__()
        if wait_for not in WAIT_FOR:
            raise ValueError(f"wait_for must be one of {WAIT_FOR}, not {wait_for!r}")
        self.job_name, self.wait_for = job_name, wait_for
        self.poll_interval_s, self.aws_conn_id = poll_interval_s, aws_conn_id
        self.deadline, self.stop_job_on_kill = deadline, stop_job_on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_name": self.job_name,
                "wait_for": self.wait_for,
                "poll_interval_s": self.poll_interval_s,
                "aws_conn_id": self.aws_conn_id,
                "deadline": self.deadline,
                "stop_job_on_kill": self.stop_job_on_kill,
            },
        )

    def pending(self, description: dict[str, Any]) -> list[str]:
        if self.wait_for == "job":
            status = description["TrainingJobStatus"]
            return [status] if status in JOB_NON_TERMINAL else []
        statuses = [
            *description.get("DebugRuleEvaluationStatuses", []),
            *description.get("ProfilerRuleEvaluationStatuses", []),
        ]
        return [s["RuleConfigurationName"] for s in statuses if s["RuleEvaluationStatus"] in RULE_NON_TERMINAL]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        hook = SageMakerHook(aws_conn_id=self.aws_conn_id)
        while True:
            description = await hook.describe_training_job_async(self.job_name)
            pending = self.pending(description)
            if not pending:
                yield TriggerEvent(
                    {"job_name": self.job_name, "wait_for": self.wait_for, "status": description["TrainingJobStatus"]}
                )
                return
            if self.deadline is not None and time.time() >= self.deadline:
                yield TriggerEvent(
                    {
                        "job_name": self.job_name,
                        "wait_for": self.wait_for,
                        "timed_out": True,
                        "pending": pending,
                        "status": description["TrainingJobStatus"],
                    }
                )
                return
            self.log.info("%s: waiting for %s (%s)", self.job_name, self.wait_for, ", ".join(pending))
            await asyncio.sleep(self.poll_interval_s)

    async def on_kill(self) -> None:
        """A user killed the deferred wait (Airflow 3.3 calls this, not on a timeout or a triggerer restart)."""
        if self.wait_for != "job" or not self.stop_job_on_kill:
            return
        from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

        from inventory_pipeline.training.stop import stop_if_running

        sagemaker = SageMakerHook(aws_conn_id=self.aws_conn_id).conn
        await asyncio.to_thread(stop_if_running, sagemaker, self.job_name, "its deferred wait was killed")
