"""Airflow operators: thin adapters over the Amazon provider and our library.

`TrainingJobOperator` is the provider's `SageMakerTrainingOperator` with two additions users need for a job
that costs money: the request is built at run time from the run's Params and upstream results, and a retry
of the task re-attaches to the job its run already created instead of starting a second (renamed) job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator


def _is_not_found(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    error = exc.response.get("Error", {})
    return error.get("Code") == "ValidationException" and "not found" in error.get("Message", "").lower()


class TrainingJobOperator(SageMakerTrainingOperator):
    """Create (or re-attach to) this run's training job.

    :param dataset: the `split_dataset` result (its `channels` become the job's train/valid/test inputs)
    :param code: the `package_code` result (`s3_uri` of sourcedir.tar.gz)
    """

    template_fields: Sequence[str] = (*SageMakerTrainingOperator.template_fields, "dataset", "code")

    def __init__(self, *, dataset: Any, code: Any, **kwargs: Any) -> None:
        kwargs.setdefault("wait_for_completion", False)
        # A name clash must never turn into a timestamped twin of a paid job.
        kwargs.setdefault("action_if_job_exists", "fail")
        super().__init__(config={}, **kwargs)
        self.dataset = dataset
        self.code = code

    def execute(self, context: Any) -> dict:
        from inventory_pipeline.dag_tasks import settings_from
        from inventory_pipeline.training.naming import job_name_for_run
        from inventory_pipeline.training.request import build_training_request

        settings = settings_from(context["params"])
        job_name = job_name_for_run(context["dag"].dag_id, context["run_id"])
        self.config = build_training_request(
            settings, job_name, self.dataset["channels"], self.code["s3_uri"], run_id=context["run_id"]
        )
        existing = self._describe_or_none(job_name)
        if existing is not None:
            self.log.info(
                "Training job %s already exists for this run (status %s): re-attaching instead of creating "
                "a second job.",
                job_name,
                existing["TrainingJobStatus"],
            )
            return self.serialize_result(job_name)
        return super().execute(context)

    def _describe_or_none(self, job_name: str) -> dict | None:
        try:
            return self.hook.describe_training_job(job_name)
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise

    def on_kill(self) -> None:
        """Killing the task stops the job, so no instance keeps billing for a run nobody waits for."""
        from inventory_pipeline.sensors import stop_job_if_running

        name = (self.config or {}).get("TrainingJobName")
        if name:
            stop_job_if_running(self.hook, name, self.log)
