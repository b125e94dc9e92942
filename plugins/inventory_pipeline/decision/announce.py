"""What people are told: the review's question, and each decision's announcement, sent exactly once as far as
a consumer can tell through an outbox in the project bucket.

Each decision's announcement is an entry, `<root>models/outbox/<id>.json`, created once with the decision
(`If-None-Match: *`). Every gate then sends what is unsent, this decision's and any earlier one's (a publish that
failed last week goes out now), and marks each sent (`<id>.sent.json`) after publishing. A crash between the two
sends it again on the next try, with the same id as a message attribute (`message_id`), so a consumer drops the
duplicate; nothing is ever left unsent because a gate succeeded.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from inventory_pipeline.aws.s3_paths import is_conflict
from inventory_pipeline.decision.comparison import p_text
from inventory_pipeline.decision.decide import GateInputs, now_iso, read_json
from inventory_pipeline.decision.store import Checkpoint, no_checkpoint
from inventory_pipeline.settings import Settings

log = logging.getLogger(__name__)

Send = Callable[[str, dict[str, Any]], None]  # (message id, decision record)


def announce(
    s3: Any, bucket: str, root: str, record: dict[str, Any], send: Send, checkpoint: Checkpoint = no_checkpoint
) -> None:
    """Queue this decision's announcement once (the attempt that superseded a `failed` decision under its own id),
    then send everything unsent."""
    outbox = Outbox(s3, bucket, root)
    attempt = int(record.get("attempt") or 1)
    outbox.add(record["job"] if attempt == 1 else f"{record['job']}-attempt-{attempt}", record)
    checkpoint("queued")
    outbox.flush(send)


class Outbox:
    def __init__(self, s3: Any, bucket: str, root: str):
        self.s3, self.bucket, self.prefix = s3, bucket, f"{root}models/outbox/"

    def add(self, message_id: str, record: dict[str, Any]) -> None:
        entry = {"id": message_id, "queued": now_iso(), "order": time.time(), "record": record}
        body = json.dumps(entry, default=str).encode()
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=f"{self.prefix}{message_id}.json",
                Body=body,
                IfNoneMatch="*",
                ContentType="application/json",
            )
        except Exception as exc:  # queued by an earlier try: that entry stands
            if not is_conflict(exc):
                raise

    def unsent(self) -> list[dict[str, Any]]:
        """Queued entries without a sent marker, oldest first."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        keys = {o["Key"] for page in pages for o in page.get("Contents", [])}
        queued = [k for k in keys if k.endswith(".json") and not k.endswith(".sent.json")]
        pending = [k for k in queued if f"{k[: -len('.json')]}.sent.json" not in keys]
        entries = [read_json(self.s3, self.bucket, k) for k in pending]
        return sorted((e for e in entries if e), key=lambda e: (e.get("order", 0), e.get("queued", ""), e["id"]))

    def flush(self, send: Send) -> list[str]:
        """Send every unsent entry; returns the ids sent. A failed send stays queued for the next gate."""
        sent = []
        for entry in self.unsent():
            try:
                send(entry["id"], entry["record"])
            except Exception as exc:  # announcing must never fail the run or lose the decision
                log.warning(
                    "could not announce %s (%s: %s): it stays in the outbox for the next gate",
                    entry["id"],
                    type(exc).__name__,
                    exc,
                )
                continue
            marker = json.dumps({"sent": now_iso()}).encode()
            self.s3.put_object(Bucket=self.bucket, Key=f"{self.prefix}{entry['id']}.sent.json", Body=marker)
            sent.append(entry["id"])
        return sent


def sns_announcer(settings: Settings) -> Send | None:
    """Announce a decision through the Amazon provider's SNS notifier, when a topic is configured."""
    if not settings.sns_topic_arn:
        log.info("no SNS topic configured (INVENTORY_SNS_TOPIC_ARN): decisions are not announced")
        return None

    def send(message_id: str, record: dict[str, Any]) -> None:
        from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

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

    return send


def review_text(proposal: dict[str, Any], inputs: GateInputs) -> tuple[str, str]:
    """(subject, Markdown body) of the approval request: what the numbers say and why they cannot decide alone."""
    candidate, champion = proposal.get("candidate") or {}, proposal.get("champion") or {}
    lines = [
        f"**Why a person decides:** {'; '.join((proposal.get('approval') or {}).get('required') or [])}",
        "",
        f"**The numbers:** {proposal['reason'].split('. Waiting for a person')[0]}",
        "",
    ]
    for side, numbers in (
        (f"candidate `{candidate.get('job')}`", candidate),
        (f"champion v{champion.get('version')}", champion),
    ):
        if numbers.get("accuracy") is not None:
            lines.append(f"- {side}: accuracy {numbers['accuracy']:.4f}, RMSE {numbers.get('rmse'):.4f}")
    baseline = proposal.get("baseline") or {}
    if baseline.get("majority"):
        lines.append(
            f"- always answering {baseline['majority']['answer']}: accuracy {baseline['majority']['accuracy']:.4f}"
        )
    if inputs.report_link or inputs.report_uri:
        lines += ["", f"Report: {inputs.report_link or inputs.report_uri}"]
    lines += [
        "",
        "**Promote** makes it the champion; **Do not promote** (also the answer when nobody answers in "
        "time) keeps the current one. Either way the decision records who answered.",
    ]
    return f"Promote {candidate.get('job') or 'this model'}?", "\n".join(lines)


def notification_text(record: dict[str, Any]) -> tuple[str, str]:
    """(subject, message) for one decision: what happened, why, the numbers, and where to look."""
    status, job = record["status"], record["job"]
    subject = f"inventory_retraining: {status} ({job})"[:100]
    lines = [f"Decision: {status}", f"Why: {record['reason']}", f"Job: {job}", f"Run: {record.get('run_id')}"]
    for side in ("candidate", "champion"):
        numbers = record.get(side) or {}
        if numbers.get("accuracy") is not None:
            lines.append(
                f"{side.capitalize()}: accuracy {numbers['accuracy']:.4f}, RMSE {numbers.get('rmse')}, "
                f"dataset {numbers.get('dataset_version')}"
            )
    baseline = record.get("baseline") or {}
    if baseline.get("majority"):
        beats = baseline.get("paired") or {}
        lines.append(
            f"Trivial answer: always {baseline['majority']['answer']}: accuracy "
            f"{baseline['majority']['accuracy']:.4f}, RMSE {baseline['majority']['rmse']:.4f} "
            f"(candidate vs it: p {p_text(beats.get('p_value', 1.0))}); always "
            f"{baseline['middle']['answer']}: RMSE {baseline['middle']['rmse']:.4f}"
        )
    comparison = record.get("comparison") or {}
    if comparison:
        lines.append(
            f"Paired test ({comparison['test']}): {comparison['only_first']} image(s) only the candidate "
            f"got right, {comparison['only_second']} only the champion, p {p_text(comparison['p_value'])} "
            f"(significant below {comparison['significance']:g})"
        )
    approval = record.get("approval") or {}
    if approval.get("state") is not None or approval.get("answer"):
        answered = "timed out" if approval.get("timed_out") else f"{approval.get('answer')} by {approval.get('by')}"
        lines.append(f"Approval: {answered} (asked because {'; '.join(approval.get('required') or [])})")
    report = record.get("report") or {}
    if report.get("link") or report.get("s3_uri"):
        lines.append(f"Report: {report.get('link') or report.get('s3_uri')}")
    tracking = record.get("tracking") or {}
    if tracking.get("run_url"):
        lines.append(f"MLflow run: {tracking['run_url']}")
    registry = record.get("registry") or {}
    if registry.get("version"):
        lines.append(f"Registry: {registry['name']} v{registry['version']} (champion: v{registry.get('champion')})")
    return subject, "\n".join(lines)
