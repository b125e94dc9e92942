"""The gate's one path: gather what a run left (one `RunFacts`), let `decide` conclude, record, apply and
announce (decision.apply.run_gate), each once, in that order. The Airflow side (the review and gate operators)
calls `review_request` / `evaluate_and_promote` with the task instance and nothing else; the task instance is
read only through `get_task_states` and `xcom_pull`, so nothing here imports Airflow.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inventory_pipeline.aws.clients import describe_training_job, s3_client
from inventory_pipeline.decision.registry import registry_for
from inventory_pipeline.settings import Settings, settings_from

log = logging.getLogger(__name__)


GATE_TASK = "evaluate_and_promote"
REVIEW_TASK = "review_promotion"
STOP_TASK = "stop_unwatched_job"
NOT_UPSTREAM = (GATE_TASK, REVIEW_TASK, "storage_gc", STOP_TASK)  # tasks that run after the facts are gathered


def task_states(ti: Any, dag_id: str, run_id: str) -> dict[str, str]:
    states = ti.get_task_states(dag_id=dag_id, run_ids=[run_id]).get(run_id, {})
    return {task: str(state) if state is not None else "none" for task, state in states.items()}


@dataclass
class GateContext:
    """What one run left behind, gathered once for the review task and the gate."""

    settings: Settings
    s3: Any
    facts: Any  # decision.decide.RunFacts
    inputs: Any  # decision.apply.GateInputs


def gather_run_facts(params: Mapping[str, Any], ti: Any, dag_id: str, run_id: str) -> GateContext:
    """The task states, failures, lineage, rule report and the job's metrics of this run (not the review)."""
    from inventory_pipeline.decision.apply import GateInputs
    from inventory_pipeline.decision.decide import RunFacts
    from inventory_pipeline.reports.build import training_metrics
    from inventory_pipeline.settings import SettingsError
    from inventory_pipeline.training.naming import job_name_for_run

    try:
        settings = settings_from(params)
    except SettingsError as exc:  # the run was refused for its Params: its decision is still recorded
        log.warning("this run's Params are invalid (%s): recording its decision with the deployment's settings", exc)
        settings = settings_from({}, enforce_guardrails=False)  # a limit below a default must not stop the record
    s3 = s3_client(settings)
    states = {t: s for t, s in task_states(ti, dag_id, run_id).items() if t not in NOT_UPSTREAM}
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
    from inventory_pipeline.decision.decide import NEEDS_APPROVAL, decide

    gathered = gather_run_facts(params, ti, dag_id, run_id)
    facts, settings = gathered.facts, gathered.settings
    champion = registry_for(settings).champion()
    facts.champion_now = champion.to_dict() if champion else None
    proposal = decide(facts, settings.gate_policy)
    if proposal["status"] != NEEDS_APPROVAL:
        log.info("no approval needed: the gate will decide %s (%s)", proposal["status"], proposal["reason"])
        return None
    from inventory_pipeline.decision.apply import review_text

    subject, body = review_text(proposal, gathered.inputs)
    log.info("asking for approval (%s s at most): %s", settings.approval_timeout_s, proposal["reason"])
    return {"subject": subject, "body": body, "timeout_s": settings.approval_timeout_s}


def review_outcome(ti: Any, dag_id: str, run_id: str) -> dict[str, Any]:
    """The review task's state and, when a person (or the timeout) answered, the answer."""
    state = task_states(ti, dag_id, run_id).get(REVIEW_TASK, "none")
    answer = ti.xcom_pull(task_ids=REVIEW_TASK) if state == "success" else None
    return {"state": state, **(answer if isinstance(answer, dict) else {})}


def evaluate_and_promote(
    params: Mapping[str, Any], ti: Any, dag_id: str, run_id: str, on_recorded: Any = None
) -> dict[str, Any]:
    """Gather what the run left, let the gate decide once and apply it; the run ends failed on block/failure."""
    from inventory_pipeline.decision.apply import run_gate
    from inventory_pipeline.decision.decide import ENDS_RUN_FAILED

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


def _notifier(settings: Settings):
    """Announce a decision through the Amazon provider's SNS notifier, when a topic is configured."""
    if not settings.sns_topic_arn:
        log.info("no SNS topic configured (INVENTORY_SNS_TOPIC_ARN): decisions are not announced")
        return None

    def notify(message_id: str, record: dict[str, Any]) -> None:
        from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

        from inventory_pipeline.decision.apply import notification_text

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
