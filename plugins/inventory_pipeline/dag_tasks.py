"""What each task of the `inventory_retraining` DAG does, as plain functions of (params, run identifiers).

The DAG file only wires these together; each function builds the settings, gets its AWS client from the
Airflow connection (so the same code talks to AWS or to the local stack) and calls the library. Every
function's return value is small and JSON-serialisable: it becomes the task's XCom.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from inventory_pipeline.settings import Settings

log = logging.getLogger(__name__)


@contextmanager
def failing_fast_on_bad_input() -> Iterator[None]:
    """Invalid settings and permanent data-plane errors (bad input, a missing bucket, too many rejects) fail
    the task at once: another attempt, minutes later, would meet the same error. S3 errors that may pass
    (throttling, 5xx) and anything else keep Airflow's retries."""
    from inventory_pipeline.dataset.errors import DatasetError
    from inventory_pipeline.settings import SettingsError

    try:
        yield
    except (DatasetError, SettingsError) as exc:
        if isinstance(exc, DatasetError) and not exc.permanent:
            raise
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{type(exc).__name__}: {exc} (not retrying: it would fail the same way)") from exc


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


def _describe(settings: Settings, job_name: str) -> dict[str, Any]:
    from inventory_pipeline.aws_clients import client_from_connection

    return client_from_connection("sagemaker", settings.aws_conn_id).describe_training_job(TrainingJobName=job_name)


def evaluate_rules_self_hosted(params: Mapping[str, Any], job_name: str) -> dict[str, Any]:
    """rules_mode=self_hosted: our engine on the finished job's S3 output, results where SageMaker puts them."""
    from inventory_pipeline.rules.self_hosted import evaluate_job_rules

    settings = settings_from(params)
    statuses = evaluate_job_rules(_s3(settings), _describe(settings, job_name), settings)
    for status in statuses["DebugRuleEvaluationStatuses"] + statuses["ProfilerRuleEvaluationStatuses"]:
        log.info("%s: %s (%s)", status["RuleConfigurationName"], status["RuleEvaluationStatus"],
                 status.get("StatusDetails", ""))  # fmt: skip
    return statuses


def parse_rule_reports(
    params: Mapping[str, Any], job_name: str, manifest: Mapping[str, Any], self_hosted: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Findings, policy and the HTML report; returns the compact summary (raises when the policy fails)."""
    from inventory_pipeline.report_store import local_report_path
    from inventory_pipeline.reports.build import build_report

    settings = settings_from(params)
    describe = _describe(settings, job_name)
    if settings.rules_mode == "self_hosted" and self_hosted:
        describe = {**describe, **{k: v for k, v in self_hosted.items() if k != "ResponseMetadata"}}
    local = bool(_s3(settings).meta.endpoint_url and "amazonaws.com" not in _s3(settings).meta.endpoint_url)
    result = build_report(
        _s3(settings), describe, manifest.get("manifest_key"), settings.bucket,
        local_report_path(job_name).parent, settings.fail_on_rules, profiled_locally=local,
    )  # fmt: skip
    log.info("report: %s (%s)", result.html_path, result.s3_uri)
    for finding in result.findings:
        log.info("%-28s %-14s %s", finding.rule, finding.status, finding.evidence)
    log.info("policy: %s", result.decision.message)
    return result.summary


def evaluate_and_promote(params: Mapping[str, Any], job_name: str, report: Mapping[str, Any], run_id: str) -> dict:
    from inventory_pipeline.promotion import evaluate_and_promote as promote

    settings = settings_from(params)
    describe = _describe(settings, job_name)
    return promote(
        _s3(settings), settings.bucket, settings.root, job_name, describe["ModelArtifacts"]["S3ModelArtifacts"],
        report.get("metrics") or {}, bool(report["decision"]["failed"]), settings.min_improvement, run_id,
    )  # fmt: skip
