"""The data plane as the DAG's three tasks (and the CLI's one command).

Each stage writes its full result to S3 under `<root>staging/` at a content-addressed key and returns a
small summary (the task's XCom): retries are idempotent, and XCom never carries thousands of keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from inventory_pipeline.dataset import s3io
from inventory_pipeline.dataset.abid import Pair
from inventory_pipeline.dataset.copy import copy_selection
from inventory_pipeline.dataset.errors import EmptySelection
from inventory_pipeline.dataset.select import select_source
from inventory_pipeline.dataset.split import publish_dataset
from inventory_pipeline.settings import Settings

log = logging.getLogger(__name__)


def _content_key(root: str, kind: str, document: Any) -> str:
    digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]
    return f"{root}staging/{kind}/{digest}.json"


def _source(settings: Settings) -> dict[str, Any]:
    return {
        "bucket": settings.source_bucket,
        "prefix": settings.source_prefix,
        "file_list": settings.file_list,
        "per_class_limit": settings.per_class_limit,
    }


def _put_once(s3: Any, bucket: str, key: str, document: Any) -> None:
    """Staging keys are content hashes: an existing key already holds this exact document."""
    with s3io.explained(bucket, f"writing {key}"):
        if not s3io.exists(s3, bucket, key):
            s3io.put_json(s3, bucket, key, document)


def run_select(s3: Any, settings: Settings) -> dict[str, Any]:
    selection = select_source(
        s3, settings.source_bucket, settings.source_prefix, settings.file_list, settings.per_class_limit,
        settings.copy_workers,
    )  # fmt: skip
    document = {
        "source": _source(settings),
        "pairs": [[p.image_id, p.label] for p in selection.pairs],
        "excluded": selection.excluded,
    }
    key = _content_key(settings.root, "selections", document)
    _put_once(s3, settings.bucket, key, document)
    return {
        "selection_key": key,
        "total": len(selection.pairs),
        "counts": {str(k): v for k, v in selection.counts.items()},
        "excluded": len(selection.excluded),
        "source_bucket": settings.source_bucket,
    }


def run_copy(s3: Any, settings: Settings, selection_key: str) -> dict[str, Any]:
    selection = s3io.read_json(s3, settings.bucket, selection_key)
    pairs = [Pair(image_id, int(label)) for image_id, label in selection["pairs"]]
    source = selection["source"]
    result = copy_selection(
        s3, pairs, source["bucket"], source["prefix"], settings.bucket, settings.root,
        workers=settings.copy_workers, reject_threshold=settings.reject_threshold,
    )  # fmt: skip
    document = {"source": source, "accepted": result.accepted, "rejects": result.rejects}
    key = _content_key(settings.root, "copies", document)
    _put_once(s3, settings.bucket, key, document)
    return {
        "copy_key": key,
        "new": result.new,
        "accepted": len(result.accepted),
        "copied": result.copied,
        "skipped": result.skipped,
        "rejected": len(result.rejects),
        "rejects": result.rejects[:50],
    }


def run_split(s3: Any, settings: Settings, copy_key: str) -> dict[str, Any]:
    copied = s3io.read_json(s3, settings.bucket, copy_key)
    if not copied["accepted"]:
        raise EmptySelection("every selected image was rejected: there is nothing to publish")
    return publish_dataset(
        s3, settings.bucket, settings.root, copied["accepted"], copied["rejects"], copied["source"],
        workers=settings.copy_workers,
    )  # fmt: skip


def build_dataset(s3: Any, settings: Settings) -> dict[str, Any]:
    """select + copy + split in one call (the CLI); copies/skips add up both copy stages."""
    selection = run_select(s3, settings)
    copy = run_copy(s3, settings, selection["selection_key"])
    manifest = run_split(s3, settings, copy["copy_key"])
    return {
        **manifest,
        "copied": copy["copied"] + manifest["copied"],
        "skipped": copy["skipped"] + manifest["skipped"],
        "raw": {"copied": copy["copied"], "skipped": copy["skipped"]},
        "split": {"copied": manifest["copied"], "skipped": manifest["skipped"]},
        "selected": selection["total"],
        "new": copy["new"],
    }
