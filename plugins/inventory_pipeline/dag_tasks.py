"""What each task of the `inventory_retraining` DAG does, as plain functions of (params, run identifiers).

The DAG file only wires these together; each function builds the settings, gets its AWS client from the
Airflow connection (so the same code talks to AWS or to the local stack) and calls the library. Every
function's return value is small and JSON-serialisable: it becomes the task's XCom.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from inventory_pipeline.settings import Settings

log = logging.getLogger(__name__)


def settings_from(params: Mapping[str, Any] | None) -> Settings:
    return Settings.from_sources(dict(params or {}))


def _s3(settings: Settings):
    from inventory_pipeline.aws_clients import client_from_connection

    # Enough pooled connections for the copy pool, so threads never wait on each other for a socket.
    return client_from_connection("s3", settings.aws_conn_id, max_pool_connections=settings.copy_workers + 4)


def select_source(params: Mapping[str, Any]) -> dict[str, Any]:
    from inventory_pipeline.dataset.stages import run_select

    settings = settings_from(params)
    summary = run_select(_s3(settings), settings)
    log.info("selected %d images %s", summary["total"], summary["counts"])
    return summary


def copy_images(params: Mapping[str, Any], selection: Mapping[str, Any]) -> dict[str, Any]:
    from inventory_pipeline.dataset.stages import run_copy

    settings = settings_from(params)
    result = run_copy(_s3(settings), settings, selection["selection_key"])
    log.info(
        "%d new images; copied %d objects, skipped %d (already there), rejected %d",
        result["new"], result["copied"], result["skipped"], result["rejected"],
    )  # fmt: skip
    return result


def split_dataset(params: Mapping[str, Any], copy_result: Mapping[str, Any]) -> dict[str, Any]:
    from inventory_pipeline.dataset.stages import run_split

    settings = settings_from(params)
    manifest = run_split(_s3(settings), settings, copy_result["copy_key"])
    log.info("dataset %s: %s", manifest["version"], manifest["counts"])
    return manifest


def package_code(params: Mapping[str, Any]) -> dict[str, Any]:
    from inventory_pipeline.training.package import upload_sourcedir

    settings = settings_from(params)
    packaged = upload_sourcedir(_s3(settings), settings.bucket, settings.root)
    return {"s3_uri": packaged.s3_uri, "sha256": packaged.sha256, "size": packaged.size,
            "uploaded": packaged.uploaded}  # fmt: skip
