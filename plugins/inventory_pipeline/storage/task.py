"""The DAG's weekly `storage_gc` step: `storage gc --keep-versions <gc_keep_versions>` on the project bucket."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


def run_gc(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Free old storage after the run's decision (its dataset and model are then protected); the deployment's
    INVENTORY_GC_KEEP_VERSIONS=0 turns it off. Returns the gc report (what was deleted, what was kept)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from inventory_pipeline.aws.clients import client_from_connection
    from inventory_pipeline.settings import SettingsError, settings_from
    from inventory_pipeline.storage.gc import collect, sagemaker_job_versions

    try:  # the declared Params only: an undeclared `bucket` in a refused conf must never point gc elsewhere
        settings = settings_from(params)
    except SettingsError as exc:
        raise AirflowSkipException(f"this run's Params are invalid ({exc}): storage gc waits for the next run") from exc
    if settings.gc_keep_versions == 0:
        log.info("storage gc is off (gc_keep_versions=0)")
        return {"skipped": "gc_keep_versions=0"}
    s3 = client_from_connection("s3", settings.aws_conn_id)
    sagemaker = client_from_connection("sagemaker", settings.aws_conn_id)
    report = collect(
        s3, settings.bucket, settings.root, settings.gc_keep_versions, job_versions=sagemaker_job_versions(sagemaker)
    )
    return report.to_dict()
