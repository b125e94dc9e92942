"""What each task of the `inventory_retraining` DAG does, as plain functions of (params, run identifiers).

The DAG file only wires these together; each function builds the settings, gets its AWS client from the
Airflow connection (so the same code talks to AWS or to the local stack) and calls the library. Every
function's return value is small and JSON-serialisable: it becomes the task's XCom.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
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


class DeploymentValues(Mapping[str, str]):
    """The deployment's `INVENTORY_*` values: the Airflow Variable of that name, else the environment variable
    (Settings.from_sources puts a Param given in the run above both, and the field's default below). Each name
    is looked up once per instance: one settings_from call asks the Variables once."""

    def __init__(self, variable_get: Callable[[str], str | None] | None = None):
        self._variable_get = variable_get or _airflow_variable
        self._seen: dict[str, str | None] = {}

    def __getitem__(self, name: str) -> str:
        import os

        if name not in self._seen:
            value = self._variable_get(name)
            self._seen[name] = str(value) if value is not None else os.environ.get(name)
        if self._seen[name] is None:
            raise KeyError(name)
        return self._seen[name]

    def __iter__(self) -> Iterator[str]:  # only looked up by name; never listed
        return iter(())

    def __len__(self) -> int:
        return 0


def _airflow_variable(name: str) -> str | None:
    from airflow.sdk import Variable

    return Variable.get(name, default=None)


def declared_params() -> frozenset[str] | None:
    """The running DAG's declared Param names (its Params dict is the one place a Param is added); None
    outside a running task, where there is no run conf and the params are the calling code's own."""
    from airflow.sdk import get_current_context

    try:
        context = get_current_context()
    except RuntimeError:
        return None
    return frozenset(context["dag"].params)


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


def settings_from(params: Mapping[str, Any] | None, *, enforce_guardrails: bool = True) -> Settings:
    """This run's settings: its declared Params over the deployment's values (undeclared keys are never read)."""
    declared = declared_params()
    # Airflow Variables are read inside a task; outside one (the CLI, scripts) the environment alone.
    deployment = DeploymentValues() if declared is not None else None
    return Settings.from_sources(
        dict(params or {}), deployment, declared=declared, enforce_guardrails=enforce_guardrails
    )


def s3_client(settings: Settings):
    """The S3 client every task uses, from the settings' Airflow connection."""
    from inventory_pipeline.aws_clients import client_from_connection

    # Enough pooled connections for the copy pool, so threads never wait on each other for a socket.
    return client_from_connection("s3", settings.aws_conn_id, max_pool_connections=settings.copy_workers + 4)


_s3 = s3_client


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
        result["new"],
        result["copied"],
        result["skipped"],
        result["rejected"],
    )
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
    wheelhouse = Path(settings.wheelhouse) if settings.wheelhouse else None  # None: the job pip-installs them
    packaged = upload_sourcedir(_s3(settings), settings.bucket, settings.root, wheelhouse=wheelhouse)
    return {"s3_uri": packaged.s3_uri, "sha256": packaged.sha256, "size": packaged.size, "uploaded": packaged.uploaded}


def _describe(settings: Settings, job_name: str) -> dict[str, Any]:
    from inventory_pipeline.aws_clients import client_from_connection

    return client_from_connection("sagemaker", settings.aws_conn_id).describe_training_job(TrainingJobName=job_name)


def evaluate_rules_self_hosted(params: Mapping[str, Any], job_name: str) -> dict[str, Any]:
    """rules_mode=self_hosted: our engine on the finished job's S3 output, its results under the verdicts prefix
    (which the job's execution role cannot write)."""
    from inventory_pipeline.rules.self_hosted import evaluate_job_rules
    from inventory_pipeline.s3_paths import verdicts_uri

    settings = settings_from(params)
    statuses = evaluate_job_rules(
        _s3(settings), _describe(settings, job_name), settings, output_base=verdicts_uri(settings.bucket, settings.root)
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
    from inventory_pipeline.report_store import local_report_path
    from inventory_pipeline.reports.build import build_report
    from inventory_pipeline.reports.data_section import champion_dataset
    from inventory_pipeline.s3_paths import verdicts_uri

    settings = settings_from(params)
    describe = _describe(settings, job_name)
    if settings.rules_mode != "managed" and self_hosted:  # self_hosted, or auto decided so by the train task
        describe = {**describe, **{k: v for k, v in self_hosted.items() if k != "ResponseMetadata"}}
    s3 = _s3(settings)
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


def registry_for(settings: Settings):
    """The registry, signed with (and writing `s3://` artifacts through) the settings' Airflow connection."""
    from inventory_pipeline.tracking import Registry, is_sagemaker_arn

    session = None
    if is_sagemaker_arn(settings.tracking_uri):
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        session = AwsBaseHook(aws_conn_id=settings.aws_conn_id, client_type="sagemaker").get_session()
    return Registry(settings.tracking_uri, settings.registered_model, session, lambda: _s3(settings))


def check_lineage(params: Mapping[str, Any], manifest: Mapping[str, Any], code: Mapping[str, Any]) -> dict[str, Any]:
    """Would this run reproduce the champion, or a model already judged on the same inputs? Also names the
    champion the job will score on its test images."""
    from inventory_pipeline.lineage import pretrained_etag, run_lineage, unchanged_reason

    settings = settings_from(params)
    lineage = run_lineage(
        settings, manifest["version"], code["sha256"], pretrained_etag(_s3(settings), settings.pretrained_s3_uri)
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


def _task_states(ti: Any, dag_id: str, run_id: str) -> dict[str, str]:
    states = ti.get_task_states(dag_id=dag_id, run_ids=[run_id]).get(run_id, {})
    return {task: str(state) if state is not None else "none" for task, state in states.items()}


GATE_TASK = "evaluate_and_promote"
REVIEW_TASK = "review_promotion"
STOP_TASK = "stop_unwatched_job"
NOT_UPSTREAM = (GATE_TASK, REVIEW_TASK, "storage_gc", STOP_TASK)  # tasks that run after the facts are gathered


@dataclass
class GateContext:
    """What one run left behind, gathered once for the review task and the gate."""

    settings: Settings
    s3: Any
    facts: Any  # decisions.RunFacts
    inputs: Any  # promotion.GateInputs


def gather_run_facts(params: Mapping[str, Any], ti: Any, dag_id: str, run_id: str) -> GateContext:
    """The task states, failures, lineage, rule report and the job's metrics of this run (not the review)."""
    from inventory_pipeline.decisions import RunFacts
    from inventory_pipeline.promotion import GateInputs
    from inventory_pipeline.reports.build import training_metrics
    from inventory_pipeline.settings import SettingsError
    from inventory_pipeline.training.naming import job_name_for_run

    try:
        settings = settings_from(params)
    except SettingsError as exc:  # the run was refused for its Params: its decision is still recorded
        log.warning("this run's Params are invalid (%s): recording its decision with the deployment's settings", exc)
        settings = settings_from({}, enforce_guardrails=False)  # a limit below a default must not stop the record
    s3 = _s3(settings)
    states = {t: s for t, s in _task_states(ti, dag_id, run_id).items() if t not in NOT_UPSTREAM}
    failures = {t: ti.xcom_pull(task_ids=t, key="failure") for t in states if states[t] == "failed"}
    train = ti.xcom_pull(task_ids="train") or {}
    job = (train.get("Training") or {}).get("TrainingJobName") or job_name_for_run(dag_id, run_id)
    report = ti.xcom_pull(task_ids="parse_rule_reports") or ti.xcom_pull(task_ids="parse_rule_reports", key="report")
    describe = _describe_if_any(settings, job) if states.get("train") not in ("skipped", None) else None
    metrics = training_metrics(s3, describe) if describe else {}
    report_uri = (report or {}).get("s3_uri")
    facts = RunFacts(
        job=job,
        task_states=states,
        failures={t: m for t, m in failures.items() if m},
        lineage=ti.xcom_pull(task_ids="check_lineage"),
        report=report,
        metrics=metrics,
    )
    inputs = GateInputs(
        dag_id=dag_id,
        run_id=run_id,
        model_uri=((describe or {}).get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
        params=dict(params),
        image_uri=((describe or {}).get("AlgorithmSpecification") or {}).get("TrainingImage"),
        report_uri=report_uri,
        report_link=_report_link(settings, job),
        guardrails=settings.guardrails.to_dict(),
    )
    return GateContext(settings, s3, facts, inputs)


def review_request(params: Mapping[str, Any], ti: Any, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """What the review task asks a person ({"subject", "body", "timeout_s"}), or None when the policy lets the
    numbers decide. The same pure decision the gate makes, on the same facts, before any answer exists."""
    from inventory_pipeline.decisions import NEEDS_APPROVAL, decide

    gathered = gather_run_facts(params, ti, dag_id, run_id)
    facts, settings = gathered.facts, gathered.settings
    champion = registry_for(settings).champion()
    facts.champion_now = champion.to_dict() if champion else None
    proposal = decide(facts, settings.gate_policy)
    if proposal["status"] != NEEDS_APPROVAL:
        log.info("no approval needed: the gate will decide %s (%s)", proposal["status"], proposal["reason"])
        return None
    from inventory_pipeline.promotion import review_text

    subject, body = review_text(proposal, gathered.inputs)
    log.info("asking for approval (%s s at most): %s", settings.approval_timeout_s, proposal["reason"])
    return {"subject": subject, "body": body, "timeout_s": settings.approval_timeout_s}


def review_outcome(ti: Any, dag_id: str, run_id: str) -> dict[str, Any]:
    """The review task's state and, when a person (or the timeout) answered, the answer."""
    state = _task_states(ti, dag_id, run_id).get(REVIEW_TASK, "none")
    answer = ti.xcom_pull(task_ids=REVIEW_TASK) if state == "success" else None
    return {"state": state, **(answer if isinstance(answer, dict) else {})}


def evaluate_and_promote(
    params: Mapping[str, Any], ti: Any, dag_id: str, run_id: str, on_recorded: Any = None
) -> dict[str, Any]:
    """Gather what the run left, let the gate decide once and apply it; the run ends failed on block/failure."""
    from inventory_pipeline.decisions import ENDS_RUN_FAILED
    from inventory_pipeline.promotion import run_gate

    gathered = gather_run_facts(params, ti, dag_id, run_id)
    settings, s3, facts, inputs = gathered.settings, gathered.s3, gathered.facts, gathered.inputs
    facts.review = review_outcome(ti, dag_id, run_id)
    inputs.report_html = _read_s3_uri(s3, inputs.report_uri)
    registry = registry_for(settings) if settings.tracking_uri else None  # none: check_run_conf failed the run
    record = run_gate(
        s3, settings.bucket, settings.root, registry, facts, inputs, settings.gate_policy, notify=_notifier(settings)
    )
    ti.xcom_push(key="decision", value=record)
    if on_recorded is not None:
        on_recorded(record)
    if record["status"] in ENDS_RUN_FAILED:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"decision {record['status']}: {record['reason']}")
    return record


def _describe_if_any(settings: Settings, job_name: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    from inventory_pipeline.aws_errors import is_not_found

    try:
        return _describe(settings, job_name)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def _read_s3_uri(s3: Any, uri: str | None) -> bytes | None:
    if not uri:
        return None
    from inventory_pipeline.s3_paths import split_s3_uri

    bucket, key = split_s3_uri(uri)
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:
        log.warning("could not read the report %s: %s", uri, exc)
        return None


def _report_link(settings: Settings, job: str) -> str | None:
    """The report as people open it: through the Airflow UI's plugin route, when its address is configured."""
    from inventory_pipeline.links import REPORT_ROUTE

    if not settings.report_base_url:
        return None
    return f"{settings.report_base_url.rstrip('/')}{REPORT_ROUTE}/{job}/report.html"


def _notifier(settings: Settings):
    """Announce a decision through the Amazon provider's SNS notifier, when a topic is configured."""
    if not settings.sns_topic_arn:
        log.info("no SNS topic configured (INVENTORY_SNS_TOPIC_ARN): decisions are not announced")
        return None

    def notify(message_id: str, record: dict[str, Any]) -> None:
        from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

        from inventory_pipeline.promotion import notification_text

        subject, message = notification_text(record)
        # Attributes subscribers can filter on (SNS filter policies): what was decided, for which model, by which
        # job; `message_id` is the outbox entry's, the same on a resend, so a consumer can drop a duplicate.
        attributes = {
            "decision": record["status"],
            "registered_model": settings.registered_model,
            "job": record["job"],
            "message_id": message_id,
        }
        SnsNotifier(
            aws_conn_id=settings.aws_conn_id,
            target_arn=settings.sns_topic_arn,
            message=message,
            subject=subject,
            message_attributes=attributes,
        ).notify({})
        log.info("announced %s on %s", record["status"], settings.sns_topic_arn)

    return notify


def stop_unwatched_job(params: Mapping[str, Any], ti: Any, dag_id: str, run_id: str) -> dict[str, Any]:
    """Teardown: this run's job, if it is still running when every task of the run is over (the wait timed out
    or failed, the run was marked failed), is stopped, so no instance keeps billing for a run nobody waits for.
    Only this deployment's job for this run (its ownership tags) is ever stopped."""
    from inventory_pipeline.aws_clients import client_from_connection
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
    wait = _task_states(ti, dag_id, run_id).get("wait_for_training", "none")
    status = stop_if_running(sagemaker, job, f"the run is over and nothing waits for it (wait_for_training {wait})")
    return {"job": job, "stopped": status in RUNNING, "status": status, "wait_for_training": wait}
