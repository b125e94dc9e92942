"""Announcements exactly once, as far as a consumer can tell: an outbox in the project bucket.

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
from inventory_pipeline.decision.decide import now_iso, read_json

log = logging.getLogger(__name__)

Send = Callable[[str, dict[str, Any]], None]  # (message id, decision record)


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
