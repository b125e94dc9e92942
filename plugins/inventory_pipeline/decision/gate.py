"""The gate's one path, each step once and in this order: gather what the run left (`facts.gather`, one
`RunFacts`), decide and record it once (`decide.new_record`, `store.record_once`), apply it (`apply.apply_once`),
announce it (`announce.announce`). The Airflow operators call `evaluate_and_promote(context)` and
`review_request(context)` with the task's context and nothing else; nothing in `decision` imports Airflow.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from inventory_pipeline.decision.announce import Send, announce, review_text, sns_announcer
from inventory_pipeline.decision.apply import apply_once
from inventory_pipeline.decision.decide import NEEDS_APPROVAL, GateInputs, GatePolicy, RunFacts, decide, new_record
from inventory_pipeline.decision.facts import gather
from inventory_pipeline.decision.registry import Registry
from inventory_pipeline.decision.store import Checkpoint, DecisionStore, no_checkpoint

log = logging.getLogger(__name__)


def evaluate_and_promote(context: Mapping[str, Any]) -> dict[str, Any]:
    """This run's one decision, recorded, applied and announced; returns its record (the operator ends the run
    failed on `blocked` / `failed`)."""
    run = gather(context)
    settings = run.settings
    return run_gate(
        run.s3,
        settings.bucket,
        settings.root,
        run.registry,
        run.facts,
        run.inputs,
        settings.gate_policy,
        notify=sns_announcer(settings),
    )


def review_request(context: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the review task asks a person ({"subject", "body", "timeout_s"}), or None when the policy lets the
    numbers decide. The same pure decision the gate makes, on the same facts, before any answer exists."""
    run = gather(context, for_review_task=True)
    proposal = decide(run.facts, run.settings.gate_policy)
    if proposal["status"] != NEEDS_APPROVAL:
        log.info("no approval needed: the gate will decide %s (%s)", proposal["status"], proposal["reason"])
        return None
    subject, body = review_text(proposal, run.inputs)
    log.info("asking for approval (%s s at most): %s", run.settings.approval_timeout_s, proposal["reason"])
    return {"subject": subject, "body": body, "timeout_s": run.settings.approval_timeout_s}


def run_gate(
    s3: Any,
    bucket: str,
    root: str,
    registry: Registry | None,
    facts: RunFacts,
    inputs: GateInputs,
    policy: GatePolicy,
    notify: Send | None = None,
    checkpoint: Checkpoint = no_checkpoint,
) -> dict[str, Any]:
    """Decide once (or take the decision an earlier try recorded), apply it, announce it; returns the record.

    A final decision is replayed by every later try. A `failed` one records that attempt: a later attempt whose
    run got further (its tasks were cleared and now succeed) decides again and supersedes it (history keeps
    both). `checkpoint(step)` is called after each write: the fault suite crashes there to prove every retry
    ends in the same state."""
    store = DecisionStore(s3, bucket, root)
    decided = new_record(facts, inputs, policy)  # pure; a decision an earlier try recorded stands instead
    record = store.record_once(facts.job, decided, checkpoint)
    record = apply_once(s3, bucket, root, registry, record, facts, inputs, store, checkpoint)
    if notify is not None:  # no topic, no outbox: configuring one later must not announce the past
        announce(s3, bucket, root, record, notify, checkpoint)
    return record
