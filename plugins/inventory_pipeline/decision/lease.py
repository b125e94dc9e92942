"""Who may change the champion, one at a time: a lease in the project bucket, and a hold people set.

The gate's apply (MLflow run, registry version, the `champion` alias, the deployable copy under
`models/champion/`) and the model CLI (rollback, release) each hold `ChampionLease` while they write, so the alias
and the copy never name different versions and two gate attempts of one run (a zombie try and its retry) never
both write. The lease is an S3 object created with `If-None-Match: *`; a holder that died leaves it to expire,
and the next taker replaces an expired (or released) lease with `If-Match` on its ETag, so two takers never both
win. Releasing marks it expired, again with `If-Match` (no delete: the policies grant none on `models/`).

A hold (`models/hold.json`, set by `inventory-pipeline model rollback`, ended by `model release`) pins the
champion: runs still train, score and record, but end `held`, never `promoted`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from typing import Any

from inventory_pipeline.aws.s3_paths import is_conflict, is_missing
from inventory_pipeline.decision.decide import now_iso, read_json

log = logging.getLogger(__name__)


class LeaseBusy(RuntimeError):
    """Another holder kept the champion lease for longer than this caller waits (the task is retried)."""


class ChampionLease:
    """`with ChampionLease(s3, bucket, root, "gate inventory-...")`: the one writer of the champion."""

    def __init__(self, s3: Any, bucket: str, root: str, purpose: str, ttl_s: float = 300, wait_s: float = 600):
        self.s3, self.bucket, self.key = s3, bucket, f"{root}models/champion.lease"
        self.ttl_s, self.wait_s = ttl_s, wait_s
        self.holder = {"purpose": purpose, "host": socket.gethostname(), "pid": os.getpid(), "id": uuid.uuid4().hex}
        self.etag: str | None = None

    def _body(self) -> bytes:
        return json.dumps({**self.holder, "since": now_iso(), "expires": time.time() + self.ttl_s}).encode()

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                self.etag = self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(), IfNoneMatch="*")[
                    "ETag"
                ]
                return
            except Exception as exc:
                if not is_conflict(exc):
                    raise
            current = self._current()
            if current is not None and current[0].get("expires", 0) < time.time():
                try:  # expired: take it over, unless another taker did first
                    self.etag = self.s3.put_object(
                        Bucket=self.bucket, Key=self.key, Body=self._body(), IfMatch=current[1]
                    )["ETag"]
                    log.warning(
                        "took over the champion lease of %s, expired at %s",
                        current[0].get("purpose"),
                        current[0].get("expires"),
                    )
                    return
                except Exception as exc:
                    if not (is_conflict(exc) or is_missing(exc)):  # taken over, or released, meanwhile
                        raise
            if time.monotonic() > deadline:
                held = current[0] if current else {}
                raise LeaseBusy(
                    f"the champion lease is held by {held.get('purpose')} ({held.get('host')}, since "
                    f"{held.get('since')}): not changing the champion beside it; retry later"
                )
            time.sleep(1.0)

    def _current(self) -> tuple[dict[str, Any], str] | None:
        try:
            got = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
        return json.loads(got["Body"].read()), got["ETag"]

    def release(self) -> None:
        if self.etag is None:
            return
        released = json.dumps({**self.holder, "released": now_iso(), "expires": 0}).encode()
        try:  # only our own lease: a taker that replaced an expired one keeps theirs
            self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=released, IfMatch=self.etag)
        except Exception as exc:
            log.warning("could not release the champion lease (%s): it expires in %.0f s", exc, self.ttl_s)
        self.etag = None

    def __enter__(self) -> ChampionLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def hold_key(root: str) -> str:
    return f"{root}models/hold.json"


def read_hold(s3: Any, bucket: str, root: str) -> dict[str, Any] | None:
    """The hold in force ({"version", "by", "at", "reason"}), or None (never set, or released)."""
    hold = read_json(s3, bucket, hold_key(root))
    return hold if hold and hold.get("version") else None


def set_hold(s3: Any, bucket: str, root: str, version: str, by: str, reason: str) -> dict[str, Any]:
    hold = {"version": str(version), "by": by, "at": now_iso(), "reason": reason}
    s3.put_object(
        Bucket=bucket, Key=hold_key(root), Body=json.dumps(hold, indent=1).encode(), ContentType="application/json"
    )
    return hold


def clear_hold(s3: Any, bucket: str, root: str, by: str) -> dict[str, Any] | None:
    """End the hold (recorded: who released which version, and when); returns the hold that was in force."""
    hold = read_hold(s3, bucket, root)
    released = {"version": None, "released": hold, "by": by, "at": now_iso()}
    s3.put_object(
        Bucket=bucket, Key=hold_key(root), Body=json.dumps(released, indent=1).encode(), ContentType="application/json"
    )
    return hold
