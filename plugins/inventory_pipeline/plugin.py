"""The Airflow plugin: extra links for the DAG's tasks and a small app that serves the HTML reports."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from inventory_pipeline.links import REPORT_ROUTE, MlflowRunLink, ReportLink, TrainingJobLink


def _report_app():
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import FileResponse

    from inventory_pipeline.report_store import local_report_path

    app = FastAPI(title="inventory-retraining reports")

    @app.get("/{job_name}/report.html")
    def report(job_name: str) -> FileResponse:
        try:
            path = local_report_path(job_name)
        except ValueError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        if not path.is_file():
            raise HTTPException(status_code=404, detail=f"no report for {job_name} on this Airflow host")
        return FileResponse(path, media_type="text/html")

    return app


class InventoryRetrainingPlugin(AirflowPlugin):
    name = "inventory_retraining"
    operator_extra_links = [TrainingJobLink(), ReportLink(), MlflowRunLink()]
    fastapi_apps = [{"app": _report_app(), "url_prefix": REPORT_ROUTE, "name": "Inventory retraining reports"}]
