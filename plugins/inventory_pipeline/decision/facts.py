"""What one run left behind, gathered by one function (`gather`) from the task's context, once per gate try:
the task states and failures, the lineage check, the rule report, the job's metrics, the registry's champion and
the hold in force as the gate decides, the review's answer (`RunFacts`), and what the record keeps beside the
decision (`GateInputs`). The task instance is read here only, through `get_task_states` and `xcom_pull`, so nothing
in `decision` imports Airflow.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inventory_pipeline.decision.decide import GateInputs, RunFacts
from inventory_pipeline.decision.lease import read_hold
from inventory_pipeline.decision.registry import Registry, registry_for
from inventory_pipeline.settings import Settings, SettingsError, settings_from

log = logging.getLogger(__name__)

GATE_TASK = "evaluate_and_promote"
REVIEW_TASK = "review_promotion"
STOP_TASK = "stop_unwatched_job"
NOT_UPSTREAM = (GATE_TASK, REVIEW_TASK, "storage_gc", STOP_TASK)  # tasks that run after the facts are gathered


@dataclass
class GateRun:
    """One gate try's facts and the clients it decides, records, applies and announces with."""

    settings: Settings
    s3: Any
    registry: Registry | None  # None: no tracking server configured (check_run_conf failed the run)
    facts: RunFacts
    inputs: GateInputs


def gather(context: Mapping[str, Any], *, for_review_task: bool = False) -> GateRun:
    """Everything the gate decides on, from the task's context. The review task (`for_review_task`) asks before
    any answer exists, and needs neither the answer nor the report's HTML."""
    from inventory_pipeline.aws.clients import s3_client
    from inventory_pipeline.reports.build import training_metrics
    from inventory_pipeline.training.naming import job_name_for_run

    ti, dag_id, run_id = context["ti"], context["dag"].dag_id, context["run_id"]
    params = context["params"]
    try:
        settings = settings_from(params)
    except SettingsError as exc:  # the run was refused for its Params: its decision is still recorded
        log.warning("this run's Params are invalid (%s): recording its decision with the deployment's settings", exc)
        settings = settings_from({}, enforce_guardrails=False)  # a limit below a default must not stop the record
    s3 = s3_client(settings)
    registry = registry_for(settings) if settings.tracking_uri else None
    every_state = task_states(ti, dag_id, run_id)
    states = {t: s for t, s in every_state.items() if t not in NOT_UPSTREAM}
    failures = {t: ti.xcom_pull(task_ids=t, key="failure") for t in states if states[t] == "failed"}
    train = ti.xcom_pull(task_ids="train") or {}
    job = (train.get("Training") or {}).get("TrainingJobName") or job_name_for_run(dag_id, run_id)
    report = ti.xcom_pull(task_ids="parse_rule_reports") or ti.xcom_pull(task_ids="parse_rule_reports", key="report")
    describe = _describe_if_any(settings, job) if states.get("train") not in ("skipped", None) else None
    report_uri = (report or {}).get("s3_uri")
    facts = RunFacts(
        job=job,
        task_states=states,
        failures={t: m for t, m in failures.items() if m},
        lineage=ti.xcom_pull(task_ids="check_lineage"),
        report=report,
        metrics=training_metrics(s3, describe) if describe else {},
        review=None if for_review_task else review_outcome(ti, every_state),
    )
    facts.champion_now, facts.hold = registry_state(registry, s3, settings.bucket, settings.root)
    inputs = GateInputs(
        dag_id=dag_id,
        run_id=run_id,
        model_uri=((describe or {}).get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
        params=dict(params),
        image_uri=((describe or {}).get("AlgorithmSpecification") or {}).get("TrainingImage"),
        report_html=None if for_review_task else _read_s3_uri(s3, report_uri),
        report_uri=report_uri,
        report_link=_report_link(settings, job),
        guardrails=settings.guardrails.to_dict(),
    )
    return GateRun(settings, s3, registry, facts, inputs)


def registry_state(
    registry: Registry | None, s3: Any, bucket: str, root: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the registry's champion, the hold in force) as the gate decides. A registry that cannot be asked raises:
    "could not ask" is never "no champion"."""
    champion = registry.champion() if registry is not None else None
    return (champion.to_dict() if champion else None), read_hold(s3, bucket, root)


def task_states(ti: Any, dag_id: str, run_id: str) -> dict[str, str]:
    states = ti.get_task_states(dag_id=dag_id, run_ids=[run_id]).get(run_id, {})
    return {task: str(state) if state is not None else "none" for task, state in states.items()}


def review_outcome(ti: Any, states: Mapping[str, str]) -> dict[str, Any]:
    """The review task's state (from the run's `task_states`) and, when a person (or the timeout) answered, the
    answer."""
    state = states.get(REVIEW_TASK, "none")
    answer = ti.xcom_pull(task_ids=REVIEW_TASK) if state == "success" else None
    return {"state": state, **(answer if isinstance(answer, dict) else {})}


def _describe_if_any(settings: Settings, job_name: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    from inventory_pipeline.aws.clients import describe_training_job
    from inventory_pipeline.aws.errors import is_not_found

    try:
        return describe_training_job(settings.aws_conn_id, job_name)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def _read_s3_uri(s3: Any, uri: str | None) -> bytes | None:
    if not uri:
        return None
    from inventory_pipeline.aws.s3_paths import split_s3_uri

    bucket, key = split_s3_uri(uri)
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:
        log.warning("could not read the report %s: %s", uri, exc)
        return None


def _report_link(settings: Settings, job: str) -> str | None:
    """The report as people open it: through the Airflow UI's plugin route, when its address is configured."""
    from inventory_pipeline.reports.store import REPORT_ROUTE

    if not settings.report_base_url:
        return None
    return f"{settings.report_base_url.rstrip('/')}{REPORT_ROUTE}/{job}/report.html"
