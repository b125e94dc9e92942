"""The promotion gate: every run ends in one recorded decision, written first and then applied.

1. decide (pure, `decision.decide`) and write `models/decisions/<job>/decision.json` once;
2. apply it, each step idempotent and keyed by the job: the MLflow run (Params, per-epoch metrics, rule
   outcomes, lineage, the HTML report), the registry version, the `champion` alias (only on promotion), the
   deployable copy `models/champion/` that follows the registry, then `applied.json`;
3. announce it (SNS through the provider's notifier), then `notified.json`. A failed notification is logged
   and never fails the run or loses the decision.
A retry finds the decision record and completes the same decision; it never decides again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inventory_pipeline.aws.s3_paths import split_s3_uri
from inventory_pipeline.decision.comparison import p_text
from inventory_pipeline.decision.decide import (
    BELOW_BASELINE,
    BLOCKED,
    FAILED,
    HELD,
    NOT_BETTER,
    PROMOTED,
    SUPERSEDED,
    GatePolicy,
    RunFacts,
    decide,
    now_iso,
    read_json,
)
from inventory_pipeline.decision.lease import ChampionLease, read_hold
from inventory_pipeline.decision.outbox import Outbox, Send
from inventory_pipeline.decision.registry import ModelVersionInfo, Registry, TrackingError, summary_tags
from inventory_pipeline.decision.store import DecisionStore

log = logging.getLogger(__name__)

# a model exists and is worth keeping in the registry
REGISTERED_STATUSES = (PROMOTED, NOT_BETTER, BELOW_BASELINE, BLOCKED, HELD)


@dataclass
class GateInputs:
    """Everything the gate records beside the decision itself."""

    dag_id: str
    run_id: str
    model_uri: str | None = None  # the job's model.tar.gz
    params: dict[str, Any] | None = None  # the run's Params, as tracked
    image_uri: str | None = None
    report_html: bytes | None = None
    report_uri: str | None = None
    report_link: str | None = None
    guardrails: dict[str, Any] | None = None  # the deployment's limits the run was checked against


Checkpoint = Callable[[str], None]


def _no_checkpoint(step: str) -> None:
    return None


def run_gate(
    s3: Any,
    bucket: str,
    root: str,
    registry: Registry | None,
    facts: RunFacts,
    inputs: GateInputs,
    policy: GatePolicy,
    notify: Send | None = None,
    checkpoint: Checkpoint = _no_checkpoint,
) -> dict[str, Any]:
    """Decide once (or read the decision an earlier try made), apply it, announce it; returns the record.

    A final decision is replayed by every later try. A `failed` one records that attempt: a later attempt whose
    run got further (its tasks were cleared and now succeed) decides again and supersedes it (history keeps
    both). Applying holds the champion lease (decision.lease): one writer of the champion at a time.
    `registry` is None only when no tracking server is configured, which check_run_conf refuses: the run's
    `failed` decision is then recorded and announced, with nothing to apply to a registry.
    `checkpoint(step)` is called after each write: the fault suite crashes there to prove every retry ends
    in the same state."""
    store = DecisionStore(s3, bucket, root)
    record = store.read(facts.job)
    if record is None or record["status"] == FAILED:
        decided = _new_record(s3, bucket, root, registry, facts, inputs, policy)
        if record is None:
            record, wrote = store.create(facts.job, decided)
        elif decided["status"] != FAILED:
            record, wrote = store.supersede(facts.job, record, decided)
        else:
            wrote = False  # failing again: the first failure of this attempt stands
        log.info(
            "decision for %s: %s (%s)%s",
            facts.job,
            record["status"],
            record["reason"],
            "" if wrote else " [recorded by an earlier try]",
        )
        checkpoint("decision")
    else:
        log.info(
            "decision for %s already recorded: %s (%s); completing it", facts.job, record["status"], record["reason"]
        )
    if registry is None:
        if record["status"] != FAILED:
            raise TrackingError(f"no tracking server to apply the decision {record['status']!r} to")
        log.warning("no tracking server (INVENTORY_TRACKING_URI): the decision is recorded in S3 only")
        applied: dict[str, Any] = {}
    else:
        applied = store.read(facts.job, store.marker(record, "applied"))
        if applied is None:
            with ChampionLease(s3, bucket, root, f"gate {facts.job}"):
                applied = store.read(facts.job, store.marker(record, "applied")) or apply_decision(
                    s3, bucket, root, registry, record, facts, inputs, store, checkpoint
                )
    record = {**record, "tracking": applied.get("tracking"), "registry": applied.get("registry")}
    if applied.get("superseded"):
        record = {
            **record,
            "decided_status": record["status"],
            "status": SUPERSEDED,
            "superseded": applied["superseded"],
            "reason": f"{record['reason']}. Not applied: {applied['superseded']['why']}",
        }
    if notify is not None:  # no topic, no outbox: configuring one later must not announce the past
        outbox = Outbox(s3, bucket, root)
        attempt = int(record.get("attempt") or 1)
        outbox.add(facts.job if attempt == 1 else f"{facts.job}-attempt-{attempt}", record)
        checkpoint("queued")
        outbox.flush(notify)
    return record


def _new_record(
    s3: Any,
    bucket: str,
    root: str,
    registry: Registry | None,
    facts: RunFacts,
    inputs: GateInputs,
    policy: GatePolicy,
) -> dict[str, Any]:
    champion = registry.champion() if registry is not None else None
    facts.champion_now = champion.to_dict() if champion else None
    facts.hold = read_hold(s3, bucket, root)
    return {
        "job": facts.job,
        "dag_id": inputs.dag_id,
        "run_id": inputs.run_id,
        **decide(facts, policy),
        "lineage": (facts.lineage or {}).get("lineage"),
        "model": inputs.model_uri,
        "report": {
            "s3_uri": inputs.report_uri,
            "link": inputs.report_link,
            "policy": ((facts.report or {}).get("decision") or {}).get("message"),
        },
        "rules": (facts.report or {}).get("rules") or [],
        "guardrails": inputs.guardrails,
        "decided": now_iso(),
    }


def apply_decision(
    s3: Any,
    bucket: str,
    root: str,
    registry: Registry,
    record: dict[str, Any],
    facts: RunFacts,
    inputs: GateInputs,
    store: DecisionStore,
    checkpoint: Checkpoint,
) -> dict[str, Any]:
    """Log the run, register the model, and move the alias only if it still names the champion the decision was
    compared with and no hold began since (compare-and-swap, under the caller's champion lease)."""
    job, status, metrics = record["job"], record["status"], facts.metrics or {}
    attempt = int(record.get("attempt") or 1)
    lineage = record.get("lineage") or {}
    run_id = registry.log_run(
        job,
        params=inputs.params or {},
        history=metrics.get("history") or [],
        metrics={
            "test_accuracy": metrics.get("accuracy"),
            "test_rmse": metrics.get("rmse"),
            "champion_test_accuracy": (metrics.get("champion") or {}).get("accuracy"),
            **_decision_metrics(record),
        },
        tags={
            **lineage,
            "job": job,
            "run_id": inputs.run_id,
            "dag_id": inputs.dag_id,
            "decision": status,
            "decision_reason": record["reason"][:4000],
            "image_uri": inputs.image_uri or "",
            "report_s3_uri": inputs.report_uri or "",
            **{f"rule.{r['name']}": r["status"] for r in record.get("rules") or []},
        },
        artifacts={
            name: body
            for name, body in (
                ("report.html", inputs.report_html),
                ("decision.json", json.dumps(record, indent=1).encode()),
                ("metrics.json", json.dumps(metrics, indent=1).encode() if metrics else None),
            )
            if body
        },
        attempt=attempt,
    )
    checkpoint("tracking")
    version: ModelVersionInfo | None = None
    if status in REGISTERED_STATUSES and record.get("model"):
        tags = {
            **lineage,
            "run_id": inputs.run_id,
            "decision": status,
            "image_uri": inputs.image_uri or "",
            **summary_tags(metrics),
        }
        version = registry.register(job, record["model"], run_id, tags)
        checkpoint("registry")
    superseded = None
    if status == PROMOTED and version is not None:
        superseded = _moved_since(registry.champion(), version, record, read_hold(s3, bucket, root))
        if superseded is None:
            registry.set_champion(version.version)
            checkpoint("alias")
        else:
            log.warning("not applying the promotion of %s: %s", job, superseded["why"])
            registry.tag_version(version.version, "decision", SUPERSEDED)
    champion = registry.champion()
    follow_registry(s3, bucket, root, champion)
    checkpoint("champion_copy")
    applied = {
        "applied": now_iso(),
        "tracking": {"uri": registry.tracking_uri, "run_id": run_id, "run_url": registry.run_url(run_id)},
        "registry": {
            "name": registry.model_name,
            "version": version.version if version else None,
            "aliases": list(registry.version_aliases(version.version)) if version else [],
            "champion": champion.version if champion else None,
        },
        **({"superseded": superseded} if superseded else {}),
    }
    applied, _ = store.create(job, applied, store.marker(record, "applied"))
    checkpoint("applied")
    return applied


def _moved_since(
    now: ModelVersionInfo | None, candidate: ModelVersionInfo, record: dict[str, Any], hold: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Why the promotion must not be applied now (None: apply it). The alias already naming the candidate is
    this decision applied by an earlier try."""
    if now is not None and now.version == candidate.version:
        return None
    compared = (record.get("champion") or {}).get("version")
    current = now.version if now else None
    if hold and str(hold.get("version")) != candidate.version:
        return {
            "why": f"v{hold['version']} has been held as champion by {hold.get('by')} since {hold.get('at')}",
            "champion_now": current,
            "hold": hold,
        }
    if (str(compared) if compared is not None else None) != current:
        return {
            "why": f"the champion is v{current or 'none'} now, not v{compared or 'none'} it was compared with "
            "(a rollback or another run moved it since the decision)",
            "champion_now": current,
        }
    return None


def _decision_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The numbers the decision rests on, as MLflow metrics: the trivial answer's and the paired test's."""
    baseline, comparison = record.get("baseline") or {}, record.get("comparison") or {}
    values = {
        "baseline_majority_accuracy": (baseline.get("majority") or {}).get("accuracy"),
        "baseline_majority_rmse": (baseline.get("majority") or {}).get("rmse"),
        "baseline_middle_rmse": (baseline.get("middle") or {}).get("rmse"),
        "baseline_p_value": (baseline.get("paired") or {}).get("p_value"),
        "paired_only_candidate": comparison.get("only_first"),
        "paired_only_champion": comparison.get("only_second"),
        "paired_p_value": comparison.get("p_value"),
    }
    return {name: float(value) for name, value in values.items() if value is not None}


def follow_registry(s3: Any, bucket: str, root: str, champion: ModelVersionInfo | None) -> None:
    """Make `models/champion/` (the deployable copy) the registry champion's model; metrics.json, written last,
    records which version and copy it is, so an interrupted copy is repaired on the next call."""
    from inventory_pipeline.dataset.s3io import etag

    if champion is None:
        return
    prefix = f"{root}models/champion/"
    recorded = read_json(s3, bucket, f"{prefix}metrics.json") or {}
    current = etag(s3, bucket, f"{prefix}model.tar.gz")
    if recorded.get("version") == champion.version and current and recorded.get("model_etag") == current:
        return
    if recorded.get("version") not in (None, champion.version):
        log.info(
            "models/champion/ holds v%s; the registry's champion is v%s: copying it",
            recorded.get("version"),
            champion.version,
        )
    src_bucket, src_key = split_s3_uri(champion.source)
    copied = s3.copy_object(
        Bucket=bucket, Key=f"{prefix}model.tar.gz", CopySource={"Bucket": src_bucket, "Key": src_key}
    )
    body = {
        "version": champion.version,
        "model": champion.source,
        "model_etag": copied["CopyObjectResult"]["ETag"].strip('"'),
        **champion.to_dict(),
        "copied": now_iso(),
    }
    s3.put_object(Bucket=bucket, Key=f"{prefix}metrics.json", Body=json.dumps(body, indent=1).encode())


def review_text(proposal: dict[str, Any], inputs: GateInputs) -> tuple[str, str]:
    """(subject, Markdown body) of the approval request: what the numbers say and why they cannot decide alone."""
    candidate, champion = proposal.get("candidate") or {}, proposal.get("champion") or {}
    lines = [
        f"**Why a person decides:** {'; '.join((proposal.get('approval') or {}).get('required') or [])}",
        "",
        f"**The numbers:** {proposal['reason'].split('. Waiting for a person')[0]}",
        "",
    ]
    if candidate.get("accuracy") is not None:
        lines.append(
            f"- candidate `{candidate.get('job')}`: accuracy {candidate['accuracy']:.4f}, RMSE "
            f"{candidate.get('rmse'):.4f}"
        )
    if champion.get("accuracy") is not None:
        lines.append(
            f"- champion v{champion.get('version')}: accuracy {champion['accuracy']:.4f}, RMSE "
            f"{champion.get('rmse'):.4f}"
        )
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
