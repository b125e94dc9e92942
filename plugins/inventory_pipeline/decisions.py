"""One decision per run: what the gate concluded, why, and on which numbers; written once, before it is applied.

`decide()` is a pure function of what the run left behind (task states, the rule report, the job's metrics,
the lineage check, the registry's champion). `DecisionStore` keeps the record in the project bucket under
`models/decisions/<job>/decision.json`, created with `If-None-Match: *`, so a retry (or a concurrent try)
reads the existing decision instead of writing a second or contradictory one.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

PROMOTED, NOT_BETTER, BLOCKED, FAILED = "promoted", "not_better", "blocked", "failed"
SKIPPED_UNCHANGED, ROLLED_BACK = "skipped_unchanged", "rolled_back"
STATUSES = (PROMOTED, NOT_BETTER, BLOCKED, FAILED, SKIPPED_UNCHANGED, ROLLED_BACK)
ENDS_RUN_FAILED = (BLOCKED, FAILED)  # the run ends failed after the decision is recorded
BAD_STATES = ("failed", "upstream_failed")


@dataclass
class RunFacts:
    """What the gate sees of one run."""

    job: str
    task_states: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # task id -> its error, where it recorded one
    lineage: dict[str, Any] | None = None  # the check_lineage result
    report: dict[str, Any] | None = None  # parse_rule_reports' summary
    metrics: dict[str, Any] | None = None  # the job's metrics.json (with `champion` when it scored one)
    champion_now: dict[str, Any] | None = None  # the registry's champion as the gate decides


def _candidate(facts: RunFacts, dataset_version: str | None) -> dict[str, Any] | None:
    metrics = facts.metrics or {}
    if metrics.get("accuracy") is None:
        return None
    return {"job": facts.job, "accuracy": metrics["accuracy"], "rmse": metrics.get("rmse"),
            "test_images": metrics.get("test_images"), "dataset_version": dataset_version}  # fmt: skip


def _first_failure(facts: RunFacts) -> str:
    order = list(facts.task_states)
    bad = [t for t in order if facts.task_states[t] == "failed"] or [
        t for t in order if facts.task_states[t] in BAD_STATES
    ]
    if not bad:
        return "the run produced no rule report"
    task = bad[0]
    return f"{task} failed: {facts.failures[task]}" if task in facts.failures else f"{task} {facts.task_states[task]}"


def compare(candidate: dict[str, Any], champion: dict[str, Any], min_improvement: float) -> tuple[bool, str]:
    """Better = higher accuracy by more than `min_improvement`; on equal accuracy (and no minimum), lower RMSE."""
    gain = candidate["accuracy"] - champion["accuracy"]
    same = f"on the same {candidate.get('test_images') or '?'} test images"
    if gain > min_improvement:
        return True, f"accuracy {candidate['accuracy']:.4f} beats the champion's {champion['accuracy']:.4f} {same}"
    rmse, champion_rmse = candidate.get("rmse"), champion.get("rmse")
    if gain == 0 and min_improvement == 0 and rmse is not None and champion_rmse is not None and rmse < champion_rmse:
        return True, f"same accuracy {same}, lower RMSE ({rmse:.4f} < {champion_rmse:.4f})"
    needs = f" (needs more than +{min_improvement:g})" if min_improvement else ""
    return False, (f"accuracy {candidate['accuracy']:.4f} vs the champion's {champion['accuracy']:.4f} {same}{needs}; "
                   f"RMSE {rmse} vs {champion_rmse}")  # fmt: skip


def decide(facts: RunFacts, min_improvement: float) -> dict[str, Any]:
    """The decision's status, reason, and the candidate's and champion's numbers (measured on the same images)."""
    lineage = facts.lineage or {}
    dataset_version = (lineage.get("lineage") or {}).get("dataset_version")
    candidate = _candidate(facts, dataset_version)

    def outcome(status: str, reason: str, champion: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"status": status, "reason": reason, "candidate": candidate, "champion": champion}

    if lineage.get("skip") and facts.task_states.get("train") == "skipped":
        return outcome(SKIPPED_UNCHANGED, lineage.get("reason", "unchanged"))
    report = facts.report or {}
    if (report.get("decision") or {}).get("failed"):
        return outcome(BLOCKED, f"rule policy {report['decision']['message']}")
    if not report or any(state in BAD_STATES for state in facts.task_states.values()):
        return outcome(FAILED, _first_failure(facts))
    if candidate is None:
        return outcome(FAILED, "the training job reported no test accuracy")
    scored_against = lineage.get("champion")
    now = facts.champion_now
    if scored_against is None and now is None:
        return outcome(PROMOTED, "first model: there is no champion yet")
    if scored_against is None or now is None or str(scored_against["version"]) != str(now["version"]):
        was = f"v{scored_against['version']}" if scored_against else "none"
        is_now = f"v{now['version']}" if now else "none"
        return outcome(NOT_BETTER, f"the champion changed while this run trained ({was} then, {is_now} now): "
                                   "the candidate was not compared with the current champion")  # fmt: skip
    scored = (facts.metrics or {}).get("champion") or {}
    champion = {"version": str(now["version"]), "job": now.get("job"), "accuracy": scored.get("accuracy"),
                "rmse": scored.get("rmse"), "test_images": scored.get("test_images"),
                "dataset_version": dataset_version}  # fmt: skip
    if scored.get("accuracy") is None:
        why = scored.get("error", "the job did not score it")
        return outcome(NOT_BETTER, f"the champion could not be scored on this run's test images ({why}): "
                                   "not promoting what cannot be compared", champion)  # fmt: skip
    if scored.get("images_digest") != (facts.metrics or {}).get("test_images_digest"):
        return outcome(NOT_BETTER, "the champion and the candidate were not scored on the same images", champion)
    better, reason = compare(candidate, champion, min_improvement)
    return outcome(PROMOTED if better else NOT_BETTER, reason, champion)


def read_json(s3: Any, bucket: str, key: str) -> Any | None:
    """The JSON object at `key`, or None when there is none."""
    from botocore.exceptions import ClientError

    from inventory_pipeline.dataset.s3io import is_missing

    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class DecisionStore:
    """Decision records and their progress markers under `<root>models/decisions/<key>/` in the project bucket."""

    def __init__(self, s3: Any, bucket: str, root: str):
        self.s3, self.bucket, self.prefix = s3, bucket, f"{root}models/decisions/"

    def _key(self, key: str, name: str) -> str:
        return f"{self.prefix}{key}/{name}.json"

    def read(self, key: str, name: str = "decision") -> dict[str, Any] | None:
        return read_json(self.s3, self.bucket, self._key(key, name))

    def create(self, key: str, record: dict[str, Any], name: str = "decision") -> tuple[dict[str, Any], bool]:
        """Write `record` unless one exists; returns (the stored record, whether this call wrote it)."""
        from botocore.exceptions import ClientError

        try:
            self.s3.put_object(Bucket=self.bucket, Key=self._key(key, name), IfNoneMatch="*",
                               Body=json.dumps(record, indent=1, default=str).encode(),
                               ContentType="application/json")  # fmt: skip
            return record, True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412",
                                                                 "ConditionalRequestConflict"):  # fmt: skip
                raise
        existing = self.read(key, name)
        if existing is None:
            raise RuntimeError(f"decision {key}/{name} exists and cannot be read")
        return existing, False

    def all(self) -> list[dict[str, Any]]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        keys = [o["Key"] for page in pages for o in page.get("Contents", []) if o["Key"].endswith("/decision.json")]
        records = [self.read(k[len(self.prefix):].rsplit("/", 1)[0]) for k in keys]
        return sorted((r for r in records if r), key=lambda r: r.get("decided", ""))
