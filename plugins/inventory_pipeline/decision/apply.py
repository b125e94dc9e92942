"""Apply a recorded decision, each step idempotent and keyed by the job: the MLflow run (Params, per-epoch
metrics, rule outcomes, lineage, the HTML report), the registry version, the `champion` alias (only on
promotion, and only if the champion did not move since the decision), the deployable copy `models/champion/` that
follows the registry, then the `applied` marker. One writer of the champion at a time (decision.lease).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from inventory_pipeline.aws.s3_paths import split_s3_uri
from inventory_pipeline.decision.decide import (
    BELOW_BASELINE,
    BLOCKED,
    FAILED,
    HELD,
    NOT_BETTER,
    PROMOTED,
    SUPERSEDED,
    GateInputs,
    RunFacts,
    now_iso,
    read_json,
)
from inventory_pipeline.decision.lease import ChampionLease, read_hold
from inventory_pipeline.decision.registry import ModelVersionInfo, Registry, TrackingError, summary_tags
from inventory_pipeline.decision.store import Checkpoint, DecisionStore, no_checkpoint

log = logging.getLogger(__name__)

# a model exists and is worth keeping in the registry
REGISTERED_STATUSES = (PROMOTED, NOT_BETTER, BELOW_BASELINE, BLOCKED, HELD)


def apply_once(
    s3: Any,
    bucket: str,
    root: str,
    registry: Registry | None,
    record: dict[str, Any],
    facts: RunFacts,
    inputs: GateInputs,
    store: DecisionStore,
    checkpoint: Checkpoint = no_checkpoint,
) -> dict[str, Any]:
    """Apply the recorded decision unless an earlier try did (its `applied` marker), under the champion lease;
    returns the record as applied: with its `tracking` and `registry`, and `superseded` when the promotion was
    not applied because the champion moved or a hold began since the decision. `registry` is None only when no
    tracking server is configured, which check_run_conf refuses: a `failed` decision is then recorded only."""
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
    return record


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
