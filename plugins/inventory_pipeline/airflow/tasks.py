"""What each task of the `inventory_retraining` DAG does, as plain functions of (params, run identifiers).

The DAG file only wires these together; each function builds the settings, gets its AWS client from the
Airflow connection (so the same code talks to AWS or to the local stack) and calls the library. Every
function's return value is small and JSON-serialisable: it becomes the task's XCom.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inventory_pipeline.aws.clients import describe_training_job, s3_client
from inventory_pipeline.decision.facts import task_states
from inventory_pipeline.decision.registry import registry_for
from inventory_pipeline.settings import settings_from

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


def check_run_conf(
    conf: Mapping[str, Any] | None, declared: frozenset[str], params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The DAG's first task: a run conf naming anything but a declared Param, or Params the settings refuse
    (a value out of range, a blocking rule the instance can never evaluate), end the run before any work,
    once: every later task is upstream_failed instead of failing, and retrying, on the same settings."""
    from inventory_pipeline.settings import RunConfError, refuse_undeclared

    try:
        refuse_undeclared(conf, declared)
    except RunConfError as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from exc
    with failing_fast_on_bad_input():
        settings = settings_from(params)
        if not settings.tracking_uri:  # the gate records every decision there: refuse before any work
            from inventory_pipeline.settings import SettingsError

            raise SettingsError(
                "tracking_uri",
                "INVENTORY_TRACKING_URI is not set: the gate records each "
                "decision in an MLflow registry (an MLflow URI or a SageMaker MLflow tracking "
                "server ARN; the embedded stack sets it)",
            )
    return {"conf_keys": sorted(conf or {})}


def select_source(params: Mapping[str, Any]) -> dict[str, Any]:
    from inventory_pipeline.dataset.stages import run_select

    settings = settings_from(params)
    summary = run_select(s3_client(settings), settings)
    log.info("selected %d images %s", summary["total"], summary["counts"])
    return summary


def copy_images(params: Mapping[str, Any], selection: Mapping[str, Any]) -> dict[str, Any]:
    from inventory_pipeline.dataset.stages import run_copy

    settings = settings_from(params)
    result = run_copy(s3_client(settings), settings, selection["selection_key"])
    log.info(
        "%d new images; copied %d objects, skipped %d (already there), rejected %d",
        result["new"],
        result["copied"],
        result["skipped"],
        result["rejected"],
    )
    return result


def split_dataset(params: Mapping[str, Any], copy_result: Mapping[str, Any]) -> dict[str, Any]:
    from inventory_pipeline.dataset.stages import run_split

    settings = settings_from(params)
    manifest = run_split(s3_client(settings), settings, copy_result["copy_key"])
    log.info("dataset %s: %s", manifest["version"], manifest["counts"])
    return manifest


def package_code(params: Mapping[str, Any]) -> dict[str, Any]:
    from inventory_pipeline.training.package import upload_sourcedir

    settings = settings_from(params)
    wheelhouse = Path(settings.wheelhouse) if settings.wheelhouse else None  # None: the job pip-installs them
    packaged = upload_sourcedir(s3_client(settings), settings.bucket, settings.root, wheelhouse=wheelhouse)
    return {"s3_uri": packaged.s3_uri, "sha256": packaged.sha256, "size": packaged.size, "uploaded": packaged.uploaded}


def evaluate_rules_self_hosted(params: Mapping[str, Any], job_name: str) -> dict[str, Any]:
    """rules_mode=self_hosted: our engine on the finished job's S3 output, its results under the verdicts prefix
    (which the job's execution role cannot write)."""
    from inventory_pipeline.aws.s3_paths import verdicts_uri
    from inventory_pipeline.rules.self_hosted import evaluate_job_rules

    settings = settings_from(params)
    statuses = evaluate_job_rules(
        s3_client(settings),
        describe_training_job(settings.aws_conn_id, job_name),
        settings,
        output_base=verdicts_uri(settings.bucket, settings.root),
    )
    for status in statuses["DebugRuleEvaluationStatuses"] + statuses["ProfilerRuleEvaluationStatuses"]:
        log.info(
            "%s: %s (%s)",
            status["RuleConfigurationName"],
            status["RuleEvaluationStatus"],
            status.get("StatusDetails", ""),
        )
    return statuses


def parse_rule_reports(
    params: Mapping[str, Any],
    job_name: str,
    manifest: Mapping[str, Any],
    self_hosted: Mapping[str, Any] | None,
    lineage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Findings, policy and the HTML report; returns the compact summary (raises when the policy fails).
    `lineage`: check_lineage's result, naming the champion whose dataset the class mix is compared with."""
    from inventory_pipeline.aws.s3_paths import verdicts_uri
    from inventory_pipeline.reports.build import build_report
    from inventory_pipeline.reports.data_section import champion_dataset
    from inventory_pipeline.reports.store import local_report_path

    settings = settings_from(params)
    describe = describe_training_job(settings.aws_conn_id, job_name)
    if settings.rules_mode != "managed" and self_hosted:  # self_hosted, or auto decided so by the train task
        describe = {**describe, **{k: v for k, v in self_hosted.items() if k != "ResponseMetadata"}}
    s3 = s3_client(settings)
    local = bool(s3.meta.endpoint_url and "amazonaws.com" not in s3.meta.endpoint_url)
    champion = champion_dataset(s3, settings.bucket, settings.root, (lineage or {}).get("champion"))
    result = build_report(
        s3,
        describe,
        manifest.get("manifest_key"),
        settings.bucket,
        local_report_path(job_name).parent,
        settings.fail_on_rules,
        profiled_locally=local,
        champion_data=champion,
        mix_threshold=settings.class_mix_threshold,
        guardrails=settings.guardrails.to_dict(),
        verdicts=verdicts_uri(settings.bucket, settings.root, job_name),
    )
    log.info("report: %s (%s)", result.html_path, result.s3_uri)
    for finding in result.findings:
        log.info("%-28s %-14s %s", finding.rule, finding.status, finding.evidence)
    log.info("policy: %s", result.decision.message)
    return result.summary


def check_lineage(params: Mapping[str, Any], manifest: Mapping[str, Any], code: Mapping[str, Any]) -> dict[str, Any]:
    """Would this run reproduce the champion, or a model already judged on the same inputs? Also names the
    champion the job will score on its test images."""
    from inventory_pipeline.decision.lineage import pretrained_etag, run_lineage, unchanged_reason

    settings = settings_from(params)
    lineage = run_lineage(
        settings, manifest["version"], code["sha256"], pretrained_etag(s3_client(settings), settings.pretrained_s3_uri)
    )
    registry = registry_for(settings)
    champion = registry.champion()
    reason = unchanged_reason(lineage, champion.tags if champion else None, registry.versions())
    if reason and settings.force_retrain:
        log.info("unchanged, but force_retrain is set: training anyway (%s)", reason)
        reason = None
    if reason:
        log.info("%s", reason)
    elif champion:
        log.info(
            "training; the job also scores the champion v%s (job %s) on this run's test images",
            champion.version,
            champion.tags.get("job"),
        )
    else:
        log.info("training; there is no champion yet")
    return {
        "skip": reason is not None,
        "reason": reason or "",
        "lineage": lineage,
        "champion": champion.to_dict() if champion else None,
    }


def stop_unwatched_job(params: Mapping[str, Any], ti: Any, dag_id: str, run_id: str) -> dict[str, Any]:
    """Teardown: this run's job, if it is still running when every task of the run is over (the wait timed out
    or failed, the run was marked failed), is stopped, so no instance keeps billing for a run nobody waits for.
    Only this deployment's job for this run (its ownership tags) is ever stopped."""
    from inventory_pipeline.aws.clients import client_from_connection
    from inventory_pipeline.training.ownership import check_ownership, ownership_tags
    from inventory_pipeline.training.stop import RUNNING, stop_if_running

    started = ti.xcom_pull(task_ids="train")
    job = ((started or {}).get("Training") or {}).get("TrainingJobName") if isinstance(started, dict) else None
    if not job:
        return {"job": None, "stopped": False, "reason": "the run started no job"}
    settings = settings_from(params, enforce_guardrails=False)
    sagemaker = client_from_connection("sagemaker", settings.aws_conn_id)
    described = sagemaker.describe_training_job(TrainingJobName=job)
    if described["TrainingJobStatus"] not in RUNNING:
        return {"job": job, "stopped": False, "status": described["TrainingJobStatus"]}
    check_ownership(sagemaker, described, ownership_tags(settings.effective_deployment_id, dag_id, run_id))
    wait = task_states(ti, dag_id, run_id).get("wait_for_training", "none")
    status = stop_if_running(sagemaker, job, f"the run is over and nothing waits for it (wait_for_training {wait})")
    return {"job": job, "stopped": status in RUNNING, "status": status, "wait_for_training": wait}
