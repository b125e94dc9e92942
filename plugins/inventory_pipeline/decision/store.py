"""The decision records in the project bucket: `models/decisions/<job>/decision.json`, created once with
`If-None-Match: *` (a retry or a concurrent try reads the existing decision instead of writing a second one);
only a `failed` one is ever replaced, by a later attempt whose run got further (`supersede`, `If-Match`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from inventory_pipeline.aws.s3_paths import is_conflict
from inventory_pipeline.decision.decide import FAILED, read_json

log = logging.getLogger(__name__)

Checkpoint = Callable[[str], None]  # called after each write of the gate: the fault suite crashes there


def no_checkpoint(step: str) -> None:
    return None


class DecisionStore:
    """Decision records and their progress markers under `<root>models/decisions/<key>/` in the project bucket.

    `decision.json` is created once. Only a `failed` decision is ever replaced, and only by a later gate attempt
    whose run now got further (`supersede`): the failed one is kept as `attempt-<n>.json` and the new one links
    to it. Markers (`applied`, `superseded`) belong to one attempt: `marker(record, name)`."""

    def __init__(self, s3: Any, bucket: str, root: str):
        self.s3, self.bucket, self.prefix = s3, bucket, f"{root}models/decisions/"

    def _key(self, key: str, name: str) -> str:
        return f"{self.prefix}{key}/{name}.json"

    def read(self, key: str, name: str = "decision") -> dict[str, Any] | None:
        return read_json(self.s3, self.bucket, self._key(key, name))

    @staticmethod
    def marker(record: dict[str, Any], name: str) -> str:
        attempt = int(record.get("attempt") or 1)
        return name if attempt == 1 else f"{name}-{attempt}"

    def record_once(self, key: str, decided: dict[str, Any], checkpoint: Checkpoint = no_checkpoint) -> dict[str, Any]:
        """The run's one decision: the one an earlier try recorded, else `decided`, written once. A recorded
        `failed` one is replaced only when `decided` is not `failed` (the run got further after a clear); history
        keeps both."""
        record = self.read(key)
        if record is not None and record["status"] != FAILED:
            log.info(
                "decision for %s already recorded: %s (%s); completing it", key, record["status"], record["reason"]
            )
            return record
        if record is None:
            record, wrote = self.create(key, decided)
        elif decided["status"] != FAILED:
            record, wrote = self.supersede(key, record, decided)
        else:
            wrote = False  # failing again: the first failure of this attempt stands
        log.info(
            "decision for %s: %s (%s)%s",
            key,
            record["status"],
            record["reason"],
            "" if wrote else " [recorded by an earlier try]",
        )
        checkpoint("decision")
        return record

    def create(self, key: str, record: dict[str, Any], name: str = "decision") -> tuple[dict[str, Any], bool]:
        """Write `record` unless one exists; returns (the stored record, whether this call wrote it)."""
        if self._put(key, name, record, IfNoneMatch="*"):
            return record, True
        existing = self.read(key, name)
        if existing is None:
            raise RuntimeError(f"decision {key}/{name} exists and cannot be read")
        return existing, False

    def supersede(self, key: str, failed: dict[str, Any], record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Replace the `failed` decision with `record` (attempt n+1), unless another attempt replaced it first;
        returns (the decision now recorded, whether this call wrote it)."""
        attempt = int(failed.get("attempt") or 1)
        self.create(key, failed, f"attempt-{attempt}")  # history keeps the failed one
        record = {
            **record,
            "attempt": attempt + 1,
            "supersedes": {k: failed.get(k) for k in ("attempt", "status", "reason", "decided")},
        }
        current = self.s3.get_object(Bucket=self.bucket, Key=self._key(key, "decision"))
        stored = json.loads(current["Body"].read())
        if stored.get("status") != FAILED or int(stored.get("attempt") or 1) != attempt:
            return stored, False
        if self._put(key, "decision", record, IfMatch=current["ETag"]):
            return record, True
        return self.read(key) or record, False

    def _put(self, key: str, name: str, record: dict[str, Any], **condition: str) -> bool:
        """A conditional write: False when the condition failed (someone else wrote first)."""
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=self._key(key, name),
                ContentType="application/json",
                Body=json.dumps(record, indent=1, default=str).encode(),
                **condition,
            )
            return True
        except Exception as exc:
            if not is_conflict(exc):
                raise
        return False

    def all(self) -> list[dict[str, Any]]:
        """Every decision, superseded attempts included, oldest first."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        keys = [
            o["Key"]
            for page in pages
            for o in page.get("Contents", [])
            if o["Key"].endswith("/decision.json") or "/attempt-" in o["Key"]
        ]
        records = [read_json(self.s3, self.bucket, k) for k in keys]
        return sorted((r for r in records if r), key=lambda r: r.get("decided", ""))
