"""Where a run's HTML report is kept on the Airflow side (besides its copy in S3)."""

from __future__ import annotations

import os
import re
from pathlib import Path

_SAFE_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
# Where the Airflow plugin serves reports (airflow.plugin), and where links and notifications point.
REPORT_ROUTE = "/inventory/reports"


def local_report_dir() -> Path:
    configured = os.environ.get("INVENTORY_REPORT_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow")) / "inventory-reports"


def local_report_path(job_name: str) -> Path:
    """`<dir>/<job>/report.html`; the job name is checked so a URL can never reach outside the folder."""
    if not _SAFE_NAME.match(job_name):
        raise ValueError(f"not a training job name: {job_name!r}")
    return local_report_dir() / job_name / "report.html"
