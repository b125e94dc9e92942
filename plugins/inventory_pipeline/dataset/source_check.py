"""A re-run's shortcut past the source listing: the last listing's selection, when it is recent and its file list
has not changed.

Knowing that no selected photo or label changed in the source takes a listing of both folders (4000 keys for
2000 images; most of an unchanged re-run's time). After a full listing,
`<root>staging/source-checks/<settings hash>.json` records the selection it pinned, its summary, the file list's
tag (S3 ETag, or the local file's SHA-256) and when the source was listed. A run within `source_recheck_minutes`
of that listing (default 60, at most a day; 0 always lists), with the same file list, whose selection is
published, reuses it: a retried task or a re-triggered run minutes later costs a few small requests, and a weekly
run always lists. What the shortcut cannot see is a photo or label replaced in place in the source bucket inside
that window (a corrected label moves its entry to another class of the file list, which is seen); the run's log
and the selection summary (`source_listing`, `source_listed_at`) say which listing was used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from inventory_pipeline.dataset import s3io

log = logging.getLogger(__name__)


def record_key(root: str, source: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:16]
    return f"{root}staging/source-checks/{digest}.json"


def file_list_tag(s3: Any, location: str) -> str | None:
    """What identifies the file list's content ("listing" when there is none; None when it is not there: the full
    path reports that)."""
    if not location:
        return "listing"  # selection by listing: nothing but the settings defines it
    if location.startswith("s3://"):
        try:
            bucket, key = s3io.split_s3_uri(location)
        except ValueError:
            return None
        tag = s3io.etag(s3, bucket, key)
        return f"etag:{tag}" if tag is not None else None
    path = Path(location)
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def recent_check(
    s3: Any,
    bucket: str,
    root: str,
    source: dict[str, Any],
    file_list: str,
    recheck_minutes: int,
    now: dt.datetime | None = None,
) -> tuple[dict[str, Any] | None, str | None]:
    """(the recorded check when it may be reused, else None; the file list's current tag), read concurrently.
    The tag is read even when nothing may be reused: a full listing always records its selection, so a later run
    never reuses an older one."""
    key = record_key(root, source)
    with s3io.explained(bucket, f"reading {key}"):
        found = dict(
            s3io.parallel(
                lambda what: file_list_tag(s3, file_list) if what == "tag" else s3io.read_json_object(s3, bucket, key),
                ["tag", "record"],
                2,
                "source check",
            )
        )
    tag, record = found["tag"], found["record"]
    if recheck_minutes <= 0 or record is None or tag is None or record.get("file_list_tag") != tag:
        return None, tag
    if not isinstance(record.get("selection_key"), str) or not isinstance(record.get("summary"), dict):
        return None, tag
    try:
        listed_at = dt.datetime.fromisoformat(record["listed_at"])
    except (KeyError, TypeError, ValueError):
        return None, tag
    age = (now or dt.datetime.now(dt.UTC)) - listed_at
    if not dt.timedelta(0) <= age <= dt.timedelta(minutes=recheck_minutes):
        return None, tag
    return {**record, "age_s": round(age.total_seconds())}, tag


def remember(
    s3: Any,
    bucket: str,
    root: str,
    source: dict[str, Any],
    tag: str | None,
    selection_key: str,
    summary: dict[str, Any],
    listed_at: dt.datetime,
) -> None:
    """Record a full listing's selection (nothing without the file list's tag: it could not be matched)."""
    if tag is None:
        return
    key = record_key(root, source)
    record = {
        "selection_key": selection_key,
        "summary": summary,
        "file_list_tag": tag,
        "listed_at": listed_at.isoformat(timespec="seconds"),
    }
    with s3io.explained(bucket, f"writing {key}"):
        s3io.put_json(s3, bucket, key, record)
