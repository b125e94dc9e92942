"""Airflow sensors for the training job and its rule evaluations: light shells over the provider's.

Each poke builds (once per process) the provider-shaped sensor from `provider_adapters` and asks it; the
shell owns mode, interval and timeout, so reschedule mode frees the worker slot between pokes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk.bases.sensor import BaseSensorOperator


class TrainingJobSensor(BaseSensorOperator):
    """Wait for the training job; `Failed` and `Stopped` fail the task with the job's own reason."""

    template_fields: Sequence[str] = ("job_name",)
    ui_color = "#ededed"

    def __init__(
        self, *, job_name: str, aws_conn_id: str = "aws_default", print_log: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.job_name = job_name
        self.aws_conn_id = aws_conn_id
        self.print_log = print_log
        self._inner: Any = None

    def _sensor(self) -> Any:
        if self._inner is None:
            from inventory_pipeline.provider_adapters import ProviderTrainingSensor

            self._inner = ProviderTrainingSensor(
                task_id=self.task_id, job_name=self.job_name, aws_conn_id=self.aws_conn_id,
                print_log=self.print_log,
            )  # fmt: skip
        return self._inner

    def poke(self, context: Any) -> bool:
        return bool(self._sensor().poke(context))

    def on_kill(self) -> None:
        self._sensor().on_kill()


class RuleEvaluationSensor(BaseSensorOperator):
    """Wait until every debugger and profiler rule evaluation of the job is terminal (managed rules).

    With `rules_mode="self_hosted"` there is nothing to wait for at SageMaker: this task runs our rule
    engine on the job's S3 output instead, and writes the same rule-output files.
    """

    template_fields: Sequence[str] = ("job_name", "rules_mode")
    ui_color = "#ededed"

    def __init__(
        self, *, job_name: str, rules_mode: str = "managed", aws_conn_id: str = "aws_default", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.job_name = job_name
        self.rules_mode = rules_mode
        self.aws_conn_id = aws_conn_id
        self._inner: Any = None

    def execute(self, context: Any) -> Any:
        if self.rules_mode == "self_hosted":
            from inventory_pipeline.dag_tasks import evaluate_rules_self_hosted

            return evaluate_rules_self_hosted(context["params"], self.job_name)
        return super().execute(context)

    def poke(self, context: Any) -> bool:
        if self._inner is None:
            from inventory_pipeline.provider_adapters import ProviderRuleSensor

            self._inner = ProviderRuleSensor(task_id=self.task_id, job_name=self.job_name, aws_conn_id=self.aws_conn_id)
        return bool(self._inner.poke(context))
