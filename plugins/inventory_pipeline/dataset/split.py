"""split_dataset: a stable 80/10/10 split published as an ImageFolder layout, manifest last.

- An image's split depends only on its id (a hash), so it never moves between splits as the dataset grows:
  no leak from yesterday's test set into today's training set.
- The version is a content hash of the accepted (id, label, image ETag) triples: an unchanged selection
  maps to the same version, whose manifest already exists, and is reused with zero copies.
- `manifest.json` is written after every copy succeeded, so its presence means the dataset is complete;
  a run killed halfway leaves no manifest, and the re-run copies only what is missing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from typing import Any

from inventory_pipeline.dataset import s3io
from inventory_pipeline.dataset.abid import CLASSES
from inventory_pipeline.dataset.errors import EmptySplit

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
_BOUNDS = (("train", 80), ("valid", 90), ("test", 100))


def assign_split(image_id: str) -> str:
    bucket = int(hashlib.sha256(image_id.encode()).hexdigest(), 16) % 100
    return next(name for name, bound in _BOUNDS if bucket < bound)


def dataset_version(accepted: list[dict[str, Any]]) -> str:
    lines = sorted(f"{a['image_id']},{a['label']},{a['image_etag']}" for a in accepted)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def dataset_prefix(root: str, version: str) -> str:
    return f"{root}datasets/{version}/"


def channels(bucket: str, root: str, version: str) -> dict[str, str]:
    return {split: f"s3://{bucket}/{dataset_prefix(root, version)}{split}/" for split in SPLITS}


def counts_by_split(entries: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    counts = Counter((e["split"], e["label"]) for e in entries)
    return {split: {str(c): counts.get((split, c), 0) for c in CLASSES} for split in SPLITS}


def summary_of(manifest: dict[str, Any], bucket: str, copied: int, skipped: int) -> dict[str, Any]:
    return {
        "version": manifest["version"],
        "counts": manifest["counts"],
        "total": len(manifest["entries"]),
        "copied": copied,
        "skipped": skipped,
        "rejected": manifest["rejects"],
        "manifest_key": manifest["manifest_key"],
        "channels": channels(bucket, manifest["root"], manifest["version"]),
    }


_HEAD_FIELDS = ("version", "counts", "total", "manifest_key", "channels")


def published_summary(s3: Any, bucket: str, manifest_key: str) -> dict[str, Any] | None:
    """The summary of an already published version (from the manifest's metadata), or None."""
    from botocore.exceptions import ClientError

    try:
        head = s3.head_object(Bucket=bucket, Key=manifest_key)
    except ClientError as exc:
        if s3io.is_missing(exc):
            return None
        raise
    summary = head.get("Metadata", {}).get("summary")
    if summary:
        return json.loads(summary)
    manifest = s3io.read_json(s3, bucket, manifest_key)  # written by an older version without the summary
    return {k: v for k, v in summary_of(manifest, bucket, 0, 0).items() if k in _HEAD_FIELDS}


def check_splits(counts: dict[str, dict[str, int]], total: int) -> list[str]:
    """Refuse a selection whose training split misses a count or whose valid/test split is empty.

    Returns the (split/class) cells of valid and test that are empty: small datasets can leave a count out
    of those (the split is by hash, for stability); that is allowed, recorded and logged: they only measure.
    """
    missing_in_train = [label for label, n in counts["train"].items() if n == 0]
    if missing_in_train or not any(counts["test"].values()) or not any(counts["valid"].values()):
        raise EmptySplit(
            f"{total} images are too few: the training split needs every count 1-5 (missing "
            f"{missing_in_train or 'none'}) and valid/test need images; select more images"
        )
    return [f"{split}/{label}" for split in ("valid", "test") for label, n in counts[split].items() if n == 0]


def _entries(prefix: str, accepted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    entries = []
    for item in accepted:
        split = assign_split(item["image_id"])
        entries.append(
            {
                "image_id": item["image_id"],
                "label": item["label"],
                "split": split,
                "key": f"{prefix}{split}/{item['label']}/{item['image_id']}.jpg",
                "etag": item["image_etag"],  # the source photo's: its identity in the version hash
                "raw_key": item["image_key"],
                "raw_etag": item.get("raw_image_etag", item["image_etag"]),
                "source_key": item.get("source_image_key"),
                "metadata_key": item["metadata_key"],
                "metadata_etag": item.get("metadata_etag"),
            }
        )
    return entries


def _copy_into_layout(s3: Any, bucket: str, todo: list[dict[str, Any]], workers: int) -> None:
    def copy(entry: dict[str, Any]) -> None:
        # CopySourceIfMatch: the dataset holds exactly the raw bytes the copy stage validated and recorded.
        source = {"Bucket": bucket, "Key": entry["raw_key"]}
        s3.copy_object(
            Bucket=bucket, Key=entry["key"], CopySource=source, CopySourceIfMatch=entry["raw_etag"]
        )

    s3io.parallel(copy, todo, workers, "split copies")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _point_latest(s3: Any, bucket: str, root: str, version: str, manifest_key: str, created: str) -> None:
    """`<root>datasets/latest.json` names the version built most recently (rewritten only when it changes)."""
    key = f"{root}datasets/latest.json"
    try:
        if s3io.read_json(s3, bucket, key).get("version") == version:
            return
    except Exception as exc:
        if not (s3io.is_missing(exc) or isinstance(exc, ValueError)):  # ValueError: not JSON, overwrite it
            raise
    s3io.put_json(s3, bucket, key, {"version": version, "manifest_key": manifest_key, "created": created})


def reuse_published(
    s3: Any,
    bucket: str,
    root: str,
    version: str,
    manifest_key: str,
    rejects: list[dict[str, str]],
    published: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The manifest summary of an already published version (0 copies), or None when it is not published.

    `published`: the manifest's summary when the caller has just read it (published_summary)."""
    published = published or published_summary(s3, bucket, manifest_key)
    if published is None:
        return None
    log.info("dataset %s is already published (%s): reusing it, 0 copies", version, manifest_key)
    _point_latest(s3, bucket, root, version, manifest_key, _now())
    return {**published, "rejected": rejects, "copied": 0, "skipped": published["total"]}


def publish_dataset(
    s3: Any,
    bucket: str,
    root: str,
    accepted: list[dict[str, Any]],
    rejects: list[dict[str, str]],
    source: dict[str, Any],
    workers: int = 32,
    settings_used: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Copy the accepted images into `datasets/<version>/<split>/<label>/<id>.jpg`; manifest last."""
    version = dataset_version(accepted)
    prefix = dataset_prefix(root, version)
    manifest_key = f"{prefix}manifest.json"
    with s3io.explained(bucket, "publishing the dataset"):
        reused = reuse_published(s3, bucket, root, version, manifest_key, rejects)
        if reused is not None:
            return reused

        entries = _entries(prefix, accepted)
        counts = counts_by_split(entries)
        thin = check_splits(counts, len(entries))
        if thin:
            log.warning("dataset %s has no image of %s", version, ", ".join(thin))
        present = s3io.list_objects(s3, bucket, prefix)  # what an interrupted earlier run already copied
        todo = [
            e
            for e in entries
            if getattr(present.get(e["key"]), "etag", None) not in (e["etag"], e["raw_etag"])
        ]
        log.info("dataset %s: %d images, %d to copy, %d already there", version, len(entries), len(todo),
                 len(entries) - len(todo))  # fmt: skip
        _copy_into_layout(s3, bucket, todo, workers)

        manifest = {
            "version": version,
            "root": root,
            "bucket": bucket,
            "manifest_key": manifest_key,
            "created": _now(),
            "counts": counts,
            "classes_missing": thin,
            "splits": {"train": 0.8, "valid": 0.1, "test": 0.1, "assignment": "sha256(image_id) % 100"},
            "source": source,
            "settings": settings_used or {},
            "entries": entries,
            "rejects": rejects,
        }
        summary = summary_of(manifest, bucket, copied=len(todo), skipped=len(entries) - len(todo))
        # Last: its presence means "complete". Its object metadata carries the summary, so a re-run learns
        # everything it needs from one HEAD instead of downloading a manifest with thousands of entries.
        body = json.dumps(manifest, indent=1, sort_keys=True).encode()
        s3.put_object(
            Bucket=bucket, Key=manifest_key, Body=body, ContentType="application/json",
            Metadata={"summary": json.dumps({k: summary[k] for k in _HEAD_FIELDS}, separators=(",", ":"))},
        )  # fmt: skip
        _point_latest(s3, bucket, root, version, manifest_key, manifest["created"])
    log.info("published dataset %s: %s", version, manifest["counts"])
    return summary
