"""Extra links on the DAG's tasks: the training job and the HTML report, in both backends.

On AWS the job link opens the SageMaker console (region- and partition-aware, as the Amazon provider's
links do); on the local stack it opens the local SageMaker server's page for the job. The report link opens
the report through this project's Airflow plugin (`/inventory/reports/...`), which serves the run's copy.
Kept free of boto3 imports: links are loaded wherever the DAG is parsed.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

from inventory_pipeline.reports.store import REPORT_ROUTE

_CONSOLE_DOMAINS = {"aws": "aws.amazon.com", "aws-cn": "amazonaws.cn", "aws-us-gov": "amazonaws-us-gov.com"}


class TrainingJobLink(BaseOperatorLink):
    name = "SageMaker training job"
    key: ClassVar[str] = "inventory_training_job"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        value = XCom.get_value(key=self.key, ti_key=ti_key)
        return training_job_url(**value) if value else ""

    @classmethod
    def persist(cls, context: Any, **value: Any) -> None:
        context["ti"].xcom_push(key=cls.key, value=value)


def training_job_url(job_name: str, region_name: str, partition: str = "aws", local_endpoint: str = "") -> str:
    if local_endpoint:
        return f"{local_endpoint.rstrip('/')}/jobs/{job_name}"
    domain = _CONSOLE_DOMAINS.get(partition, "aws.amazon.com")
    return f"https://console.{domain}/sagemaker/home?region={region_name}#/jobs/{job_name}"


class ReportLink(BaseOperatorLink):
    name = "Rule report"
    key: ClassVar[str] = "inventory_report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        value = XCom.get_value(key=self.key, ti_key=ti_key)
        return f"{REPORT_ROUTE}/{value['job_name']}/report.html" if value else ""

    @classmethod
    def persist(cls, context: Any, job_name: str) -> None:
        context["ti"].xcom_push(key=cls.key, value={"job_name": job_name})


class MlflowRunLink(BaseOperatorLink):
    """The decision's MLflow run (its Params, curves, rule outcomes, report and registry version)."""

    name = "MLflow run"
    key: ClassVar[str] = "inventory_mlflow_run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        value = XCom.get_value(key=self.key, ti_key=ti_key)
        return value.get("run_url", "") if value else ""

    @classmethod
    def persist(cls, context: Any, run_url: str) -> None:
        if run_url.startswith("http"):
            context["ti"].xcom_push(key=cls.key, value={"run_url": run_url})
