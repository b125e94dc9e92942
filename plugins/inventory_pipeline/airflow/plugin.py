"""The Airflow plugin: extra links for the DAG's tasks and a small app that serves the HTML rule reports.

Airflow does not authenticate plugin apps for you: the report route asks Airflow's own auth manager (the
dependency the core API uses) whether the caller may read the `inventory_retraining` DAG, so a logged-out
caller gets 401 and a user without read access to the DAG gets 403. The report is read from S3 through the
Airflow connection, from this deployment's verdicts prefix (where parse_rule_reports wrote it: the execution
role cannot write there), so the link works on whichever host serves the API, and serves only this
deployment's reports: a job name is looked up under this deployment's bucket and prefix, never by asking
SageMaker where some job of the account put its output.
"""

# No `from __future__ import annotations` here: FastAPI reads the route and dependency annotations at runtime,
# and `Request` is imported inside _report_app (plugins load in workers too), where a string annotation
# would not resolve and FastAPI would take `request` for a query parameter.

from airflow.plugins_manager import AirflowPlugin

from inventory_pipeline.airflow.links import MlflowRunLink, ReportLink, TrainingJobLink
from inventory_pipeline.reports.store import REPORT_ROUTE

DAG_ID = "inventory_retraining"


def _database_variable(name: str) -> str | None:
    """An Airflow Variable as the API server reads it: from the metadata database (it runs no task, so not
    through the Task SDK); None where there is none, or no database (a worker or a test importing the plugin)."""
    try:
        from airflow.models import Variable

        return Variable.get(name, default_var=None)
    except Exception:
        return None


def deployment_settings():
    """The deployment's settings as the tasks read them (settings.DeploymentValues: the Variable, else the
    environment, else the default), from the API server's own database and environment."""
    from inventory_pipeline.settings import DeploymentValues, Settings

    return Settings.from_sources({}, DeploymentValues(_database_variable), enforce_guardrails=False)


def report_s3_uri(job_name: str, settings=None) -> str:
    """Where parse_rule_reports stores a job's report (reports.build writes it there)."""
    from inventory_pipeline.aws.s3_paths import verdicts_uri

    settings = settings or deployment_settings()
    return f"{verdicts_uri(settings.bucket, settings.root, job_name)}/report.html"


# The report is HTML that sits next to a training job's output: the browser runs none of its scripts, submits
# none of its forms, gives it no access to Airflow's origin (cookies, API) and never sniffs another type.
REPORT_HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}


def read_report(job_name: str) -> bytes:
    """The report from this deployment's bucket, through the deployment's Airflow connection."""
    from inventory_pipeline.aws.clients import client_from_connection
    from inventory_pipeline.aws.s3_paths import split_s3_uri

    settings = deployment_settings()
    bucket, key = split_s3_uri(report_s3_uri(job_name, settings))
    return client_from_connection("s3", settings.aws_conn_id).get_object(Bucket=bucket, Key=key)["Body"].read()


async def may_read_the_dag(request) -> None:
    """The core API's own checks (the user from the JWT cookie or bearer token, then the auth manager's
    `is_authorized_dag` for GET on this DAG), imported at request time: plugins are also loaded by workers
    and the DAG processor, which must not import the API server's modules."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user, requires_access_dag

    user = await get_user(request, None, await bearer_scheme(request))
    requires_access_dag("GET", param_dag_id=DAG_ID)(request, user)


def _report_app():
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import Response

    app = FastAPI(title="inventory-retraining reports")

    async def _may_read_the_dag(request: Request) -> None:
        await may_read_the_dag(request)

    @app.get("/{job_name}/report.html", dependencies=[Depends(_may_read_the_dag)])
    def report(job_name: str) -> Response:
        from botocore.exceptions import ClientError

        from inventory_pipeline.aws.s3_paths import is_missing
        from inventory_pipeline.reports.store import local_report_path

        try:
            local_report_path(job_name)  # validates the name: nothing outside a job name reaches AWS
            body = read_report(job_name)
        except ValueError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        except ClientError as exc:
            if is_missing(exc):
                raise HTTPException(status_code=404, detail=f"no report for {job_name}") from exc
            raise
        return Response(body, media_type="text/html", headers=REPORT_HEADERS)

    return app


class InventoryRetrainingPlugin(AirflowPlugin):
    name = "inventory_retraining"
    operator_extra_links = [TrainingJobLink(), ReportLink(), MlflowRunLink()]
    fastapi_apps = [{"app": _report_app(), "url_prefix": REPORT_ROUTE, "name": "Inventory retraining reports"}]
