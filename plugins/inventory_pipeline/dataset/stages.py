"""The data plane as the DAG's three tasks (and the CLI's one command).

Each stage writes its full result to S3 under `<root>staging/` at a content-addressed key and returns a
small summary (the task's XCom): retries are idempotent, and XCom never carries thousands of keys. The DAG's
tasks read the previous stage's document back from S3; build_dataset, one process, hands it over in memory.

Once a selection's dataset is published, `<root>staging/published/<selection hash>.json` says so (written after
the manifest). A later run that pins exactly the same source objects finds it and skips the raw area's listing,
validation and copies: it costs the source listing and a handful of small requests, whatever the dataset's size;
within `source_recheck_minutes` of the last listing, with the same file list, not even the listing
(source_check).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from inventory_pipeline.dataset import s3io, source_check
from inventory_pipeline.dataset.abid import CLASSES
from inventory_pipeline.dataset.copy import copy_selection, list_raw
from inventory_pipeline.dataset.errors import EmptySelection
from inventory_pipeline.dataset.packs import RawIndex
from inventory_pipeline.dataset.select import select_source
from inventory_pipeline.dataset.source_index import Pinned, pin_sources
from inventory_pipeline.dataset.split import (
    assign_split,
    check_splits,
    counts_by_split,
    publish_dataset,
    published_and_latest,
    reuse_published,
)
from inventory_pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Staged:
    """A stage's document, where it is stored, and the small summary returned as XCom."""

    key: str
    document: dict[str, Any]
    summary: dict[str, Any]
    published: dict[str, Any] | None = None  # this selection's published record, when it has one


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


def _settings_used(settings: Settings) -> dict[str, Any]:
    """What decided this dataset's content, recorded in its manifest."""
    return {**_source(settings), "reject_threshold": settings.reject_threshold, "root": settings.root}


def _published_key(root: str, selection_key: str) -> str:
    return f"{root}staging/published/{selection_key.rsplit('/', 1)[-1]}"


def _published_record(s3: Any, settings: Settings, selection_key: str) -> dict[str, Any] | None:
    """The record of this selection's published dataset, when both it and the manifest it names exist."""
    key = _published_key(settings.root, selection_key)
    with s3io.explained(settings.bucket, f"reading {key}"):
        record = s3io.read_json_object(s3, settings.bucket, key)  # None: absent or not ours: take the long way
        if record is None or record.get("selection_key") != selection_key:
            return None
        if not all(isinstance(record.get(k), str) for k in ("copy_key", "manifest_key", "version")):
            return None
        if not isinstance(record.get("accepted"), int) or not isinstance(record.get("rejects"), list):
            return None
        summary, latest = published_and_latest(s3, settings.bucket, settings.root, record["manifest_key"])
        if summary is None:  # deleted since: rebuild it
            return None
    return {**record, "manifest_summary": summary, "latest": latest}


def _put_once(s3: Any, bucket: str, key: str, document: Any) -> None:
    """Staging keys are content hashes: an existing key already holds this exact document."""
    with s3io.explained(bucket, f"writing {key}"):
        if not s3io.exists(s3, bucket, key):
            s3io.put_json(s3, bucket, key, document)


def _select(s3: Any, settings: Settings) -> tuple[Staged, RawIndex | None]:
    """The selection, pinned to source versions; also the raw index it read to count what is new. A recent
    listing's published selection is reused instead (source_check)."""
    root, source_bucket, source_prefix = settings.root, settings.source_bucket, settings.source_prefix
    source = _source(settings)  # what defines the selection: names its document and its source-check record
    checked, tag = source_check.recent_check(
        s3, settings.bucket, root, source, settings.file_list, settings.source_recheck_minutes
    )
    if checked is not None:
        published = _published_record(s3, settings, checked["selection_key"])
        if published is not None:
            log.info(
                "source listed %d s ago (source_recheck_minutes=%d) with the same file list: reusing selection "
                "%s, published as dataset %s",
                checked["age_s"],
                settings.source_recheck_minutes,
                checked["selection_key"],
                published.get("version"),
            )
            summary = {
                **checked["summary"],
                "new": 0,
                "source_listed_at": checked["listed_at"],
                "source_listing": "reused",
            }
            return Staged(checked["selection_key"], {}, summary, published), None
    listed_at = dt.datetime.now(dt.UTC)
    selection = select_source(
        s3, source_bucket, source_prefix, settings.file_list, settings.per_class_limit, settings.copy_workers
    )
    # Refuse now, before anything is copied, a selection whose splits cannot all be trained and measured
    # (rejects found later can only make it thinner; the split stage checks again).
    splits = [{"label": p.label, "split": assign_split(p.image_id)} for p in selection.pairs]
    check_splits(counts_by_split(splits), len(splits))
    pinned, missing = pin_sources(
        s3, source_bucket, source_prefix, selection.pairs, settings.copy_workers, selection.metadata_listing
    )
    if not pinned:
        shown = "; ".join(f"{r['key']}: {r['reason']}" for r in missing[:5])
        raise EmptySelection(
            f"none of the {len(selection.pairs)} selected images exists in s3://{source_bucket}: {shown}"
        )
    rejects = sorted([*selection.rejects, *missing], key=lambda r: r["key"])
    document = {
        "source": source,
        "pairs": [p.to_row() for p in pinned],  # id, label, image ETag, size, metadata ETag, size
        "excluded": selection.excluded,
        "rejects": rejects,
    }
    key = _content_key(root, "selections", document)
    counts = Counter(p.pair.label for p in pinned)
    summary = {
        "selection_key": key,
        "total": len(pinned),
        "counts": {str(label): counts.get(label, 0) for label in CLASSES},
        # the population's mix, before per_class_limit: the training job corrects its answers to it
        "source_counts": {str(label): selection.source_counts.get(label, 0) for label in CLASSES},
        "excluded": len(selection.excluded),
        "rejected": len(rejects),
        "source_bucket": source_bucket,
    }

    def step(name: str) -> Any:
        if name == "put":
            return _put_once(s3, settings.bucket, key, document)
        if name == "remember":  # this listing, for a re-run soon after
            return source_check.remember(s3, settings.bucket, root, source, tag, key, summary, listed_at)
        return _published_record(s3, settings, key)

    # Concurrently: store the selection (when new), record this listing, and look for the selection's published
    # record (a re-run's shortcut).
    found = dict(s3io.parallel(step, ["put", "remember", "published"], 3, "selection"))
    published = found["published"]
    if published is not None:
        raw_index: RawIndex | None = None
        new = 0
        log.info("selection %s is unchanged since dataset %s was published", key, published.get("version"))
    else:
        raw_index = list_raw(s3, settings.bucket, root, settings.copy_workers)
        stored = {image_id for image_id, _ in raw_index.stored}
        new = sum(1 for p in pinned if p.pair.image_id not in stored)
    log.info("selection %s: %d images, %d new since the last run, %d rejected", key, len(pinned), new, len(rejects))
    summary = {
        **summary,
        "new": new,
        "source_listed_at": listed_at.isoformat(timespec="seconds"),
        "source_listing": "listed",
    }
    return Staged(key, document, summary, published), raw_index


def _copy(s3: Any, settings: Settings, selection: Staged, raw_index: RawIndex | None = None) -> Staged:
    published = selection.published or _published_record(s3, settings, selection.key)
    if published is not None:  # everything this selection needs is already copied and published
        accepted, rejects = published["accepted"], published["rejects"]
        log.info(
            "copy: selection already published as dataset %s: 0 copied, %d skipped", published["version"], accepted
        )
        summary = {
            "copy_key": published["copy_key"],
            "new": 0,
            "accepted": accepted,
            "copied": 0,
            "skipped": accepted,
            "revalidated": 0,
            "packs": 0,
            "rejected": len(rejects),
            "rejects": rejects[:50],
        }
        return Staged(published["copy_key"], {}, summary, published)
    source = selection.document["source"]
    selected = [Pinned.from_row(row) for row in selection.document["pairs"]]
    result = copy_selection(
        s3,
        selected,
        source["bucket"],
        source["prefix"],
        settings.bucket,
        settings.root,
        workers=settings.copy_workers,
        reject_threshold=settings.reject_threshold,
        earlier_rejects=selection.document.get("rejects", []),
        raw_index=raw_index,
    )
    document = {
        "source": source,
        "selection_key": selection.key,
        "excluded": len(selection.document.get("excluded", [])),
        "settings": _settings_used(settings),
        "accepted": result.accepted,
        "rejects": result.rejects,
        "index_key": result.index_key,
    }
    key = _content_key(settings.root, "copies", document)
    _put_once(s3, settings.bucket, key, document)
    summary = {
        "copy_key": key,
        "new": result.new,
        "accepted": len(result.accepted),
        "copied": result.copied,
        "skipped": result.skipped,
        "revalidated": result.revalidated,
        "packs": len(result.packs),
        "rejected": len(result.rejects),
        "rejects": result.rejects[:50],
    }
    return Staged(key, document, summary)


def _split(s3: Any, settings: Settings, copied: dict[str, Any], copy_key: str) -> dict[str, Any]:
    if not copied["accepted"]:
        raise EmptySelection("every selected image was rejected: there is nothing to publish")
    source = {
        **copied["source"],
        "selection_key": copied.get("selection_key"),
        "excluded": copied.get("excluded"),
    }
    manifest = publish_dataset(
        s3,
        settings.bucket,
        settings.root,
        copied["accepted"],
        copied["rejects"],
        source,
        workers=settings.copy_workers,
        settings_used=copied.get("settings"),
        mix_threshold=settings.class_mix_threshold,
    )
    selection_key = copied.get("selection_key")
    if selection_key:  # after the manifest: a record never points at a dataset that is not complete
        record = {
            "selection_key": selection_key,
            "copy_key": copy_key,
            "manifest_key": manifest["manifest_key"],
            "version": manifest["version"],
            "accepted": len(copied["accepted"]),
            "rejects": copied["rejects"],
        }
        _put_once(s3, settings.bucket, _published_key(settings.root, selection_key), record)
    return manifest


def _read_staged(s3: Any, settings: Settings, key: str) -> dict[str, Any]:
    with s3io.explained(settings.bucket, f"reading {key}"):
        return s3io.read_json(s3, settings.bucket, key)


def run_select(s3: Any, settings: Settings) -> dict[str, Any]:
    """The (image id, label) pairs pinned to their source objects, written to
    `<root>staging/selections/<hash>.json`. Returns: selection_key, total, counts {label: n}, source_counts
    {label: n} (in the source, before per_class_limit), new (not yet in the raw area), excluded (counts outside
    1-5), rejected (missing or unreadable), source_bucket.
    """
    return _select(s3, settings)[0].summary


def run_copy(s3: Any, settings: Settings, selection_key: str) -> dict[str, Any]:
    """Validate the selection and store its new images in `<root>raw/` packs; the result goes to
    `<root>staging/copies/<hash>.json`.

    Returns: copy_key, new, accepted, copied (images stored now), skipped (already stored), revalidated (stored
    images whose metadata changed), packs (written), rejected (count), rejects (the first 50 {key, reason}).
    Raises TooManyRejects, copying nothing, when rejects / selected > settings.reject_threshold.
    """
    document = _read_staged(s3, settings, selection_key)
    return _copy(s3, settings, Staged(selection_key, document, {})).summary


def run_split(s3: Any, settings: Settings, copy_key: str) -> dict[str, Any]:
    """Publish `<root>datasets/<version>/` (manifest last) and return the manifest summary: version, counts
    {split: {class: n}}, total, copied, skipped, rejected [{key, reason}], manifest_key, channels."""
    return _split(s3, settings, _read_staged(s3, settings, copy_key), copy_key)


def build_dataset(s3: Any, settings: Settings) -> dict[str, Any]:
    """select + copy + split in one call (the CLI); copied/skipped count images (a version copies none)."""
    selection, raw_index = _select(s3, settings)
    copy = _copy(s3, settings, selection, raw_index)
    if copy.published is not None:
        record = copy.published
        with s3io.explained(settings.bucket, "reusing the published dataset"):
            manifest = reuse_published(
                s3,
                settings.bucket,
                settings.root,
                record["version"],
                record["manifest_key"],
                record["rejects"],
                record["manifest_summary"],
                record["latest"],
            )
        if manifest is None:  # deleted in the last moments: publish it again from the copy document
            manifest = _split(s3, settings, _read_staged(s3, settings, copy.key), copy.key)
    else:
        manifest = _split(s3, settings, copy.document, copy.key)
    return {
        **manifest,
        "copied": copy.summary["copied"] + manifest["copied"],
        "skipped": copy.summary["skipped"] + manifest["skipped"],
        "raw": {"copied": copy.summary["copied"], "skipped": copy.summary["skipped"]},
        "split": {"copied": manifest["copied"], "skipped": manifest["skipped"]},
        "selected": selection.summary["total"],
        "new": selection.summary["new"],
        "excluded": selection.summary["excluded"],
        "source_listing": selection.summary["source_listing"],  # "listed", or "reused" (source_check)
    }
