"""split_dataset: a stable 80/10/10 split, published as a description of the raw area's packs, manifest last.

- An image's split depends only on its id (a hash), so it never moves between splits as the dataset grows:
  no leak from yesterday's test set into today's training set.
- The version is a content hash of the accepted (id, label, image ETag) triples: an unchanged selection
  maps to the same version, whose manifest already exists, and is reused as it is.
- A version copies no image. Under `datasets/<version>/` it holds, per split, `<split>/labels.json` (each
  sample: its pack, byte offset, size and label) and `<split>.manifest`, a SageMaker ManifestFile
  (`[{"prefix": "s3://<bucket>/<root>"}, "datasets/<version>/<split>/labels.json", "raw/packs/<split>/<p>.tar",
  ...]`) that is the split's channel: SageMaker (and the local runner) download each listed object to
  `<channel dir>/<its key relative to the prefix>`, and train.py reads labels.json. A corrected label is a new
  labels.json, never a new copy of the photo.
- `manifest.json` is written after everything else of the version, so its presence means the dataset is
  complete; a run killed halfway leaves no manifest, and the re-run writes the few small files again.
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


def channel_manifest_key(root: str, version: str, split: str) -> str:
    return f"{dataset_prefix(root, version)}{split}.manifest"


def labels_key(root: str, version: str, split: str) -> str:
    return f"{dataset_prefix(root, version)}{split}/labels.json"


def channels(bucket: str, root: str, version: str) -> dict[str, str]:
    """Each split's channel: the S3 URI of its ManifestFile (training.request sends S3DataType=ManifestFile)."""
    return {split: f"s3://{bucket}/{channel_manifest_key(root, version, split)}" for split in SPLITS}


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
        "changes": manifest.get("changes"),
    }


_HEAD_FIELDS = ("version", "counts", "total", "manifest_key", "channels", "changes")


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


def _entries(accepted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    entries = []
    for item in accepted:
        entries.append(
            {
                "image_id": item["image_id"],
                "label": item["label"],
                "split": assign_split(item["image_id"]),
                "etag": item["image_etag"],  # the source photo's: its identity in the version hash
                "pack": item["pack"],  # relative to the project root
                "offset": item["offset"],
                "size": item["size"],
                "source_key": item.get("source_image_key"),
                "metadata_key": item.get("source_metadata_key"),
                "metadata_etag": item.get("metadata_etag"),
            }
        )
    return entries


def channel_files(bucket: str, root: str, version: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Per split: its labels.json document and its ManifestFile, keyed by their S3 keys."""
    files: dict[str, Any] = {}
    for split in SPLITS:
        rows = sorted((e for e in entries if e["split"] == split), key=lambda e: e["image_id"])
        labels = labels_key(root, version, split)
        files[labels] = {
            "format": "inventory-labels/1",
            "version": version,
            "split": split,
            "columns": ["path", "offset", "size", "label", "image_id"],  # path: relative to the channel dir
            "samples": [[e["pack"], e["offset"], e["size"], e["label"], e["image_id"]] for e in rows],
        }
        packs = sorted({e["pack"] for e in rows})
        files[channel_manifest_key(root, version, split)] = [
            {"prefix": f"s3://{bucket}/{root}"},
            labels[len(root) :],
            *packs,
        ]
    return files


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _latest_key(root: str) -> str:
    return f"{root}datasets/latest.json"


def read_latest(s3: Any, bucket: str, root: str) -> dict[str, Any] | None:
    """`<root>datasets/latest.json` (the version built most recently), or None (also when unreadable: it gets
    overwritten)."""
    return s3io.read_json_object(s3, bucket, _latest_key(root))


def _point_latest(
    s3: Any,
    bucket: str,
    root: str,
    version: str,
    manifest_key: str,
    created: str,
    latest: dict[str, Any] | None,
) -> None:
    """Name `version` in latest.json (rewritten only when it changes)."""
    if latest is None or latest.get("version") != version:
        s3io.put_json(
            s3, bucket, _latest_key(root), {"version": version, "manifest_key": manifest_key, "created": created}
        )


def reuse_published(
    s3: Any,
    bucket: str,
    root: str,
    version: str,
    manifest_key: str,
    rejects: list[dict[str, str]],
    published: dict[str, Any] | None = None,
    latest: dict[str, Any] | None | str = "unread",
) -> dict[str, Any] | None:
    """The manifest summary of an already published version (0 copies), or None when it is not published.

    `published` / `latest`: the manifest's summary and latest.json when the caller has just read them
    (published_and_latest). A re-run is a handful of round trips whatever the dataset's size."""
    if published is None:
        published, latest = published_and_latest(s3, bucket, root, manifest_key)
    elif latest == "unread":
        latest = read_latest(s3, bucket, root)
    if published is None:
        return None
    log.info("dataset %s is already published (%s): reusing it, 0 copies", version, manifest_key)
    _point_latest(s3, bucket, root, version, manifest_key, _now(), latest)
    return {**published, "rejected": rejects, "copied": 0, "skipped": 0}  # a version copies no image


def published_and_latest(
    s3: Any, bucket: str, root: str, manifest_key: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The manifest's summary (None: not published) and latest.json, read concurrently."""
    found = dict(
        s3io.parallel(
            lambda what: (
                published_summary(s3, bucket, manifest_key) if what == "manifest" else read_latest(s3, bucket, root)
            ),
            ["manifest", "latest"],
            2,
            "reuse check",
        )
    )
    return found["manifest"], found["latest"]


def _previous_manifest(s3: Any, bucket: str, latest: dict[str, Any] | None, version: str) -> dict[str, Any] | None:
    """The manifest of the version built before this one (what the data report compares against)."""
    if not latest or latest.get("version") == version or not isinstance(latest.get("manifest_key"), str):
        return None
    try:
        return s3io.read_json(s3, bucket, latest["manifest_key"])
    except Exception as exc:
        if s3io.is_missing(exc) or isinstance(exc, ValueError):  # removed by gc, or not ours
            log.warning("previous dataset %s is unreadable (%s): no comparison", latest.get("version"), exc)
            return None
        raise


def publish_dataset(
    s3: Any,
    bucket: str,
    root: str,
    accepted: list[dict[str, Any]],
    rejects: list[dict[str, str]],
    source: dict[str, Any],
    workers: int = 32,
    settings_used: dict[str, Any] | None = None,
    mix_threshold: float = 0.10,
) -> dict[str, Any]:
    """Describe the accepted images as `datasets/<version>/` (labels + ManifestFiles per split); manifest last."""
    from inventory_pipeline.dataset.changes import compare_versions

    version = dataset_version(accepted)
    prefix = dataset_prefix(root, version)
    manifest_key = f"{prefix}manifest.json"
    with s3io.explained(bucket, "publishing the dataset"):
        reused = reuse_published(s3, bucket, root, version, manifest_key, rejects)
        if reused is not None:
            return reused

        entries = _entries(accepted)
        counts = counts_by_split(entries)
        thin = check_splits(counts, len(entries))
        if thin:
            log.warning("dataset %s has no image of %s", version, ", ".join(thin))
        latest = read_latest(s3, bucket, root)
        changes = compare_versions(entries, counts, _previous_manifest(s3, bucket, latest, version), mix_threshold)
        if changes["flagged"]:
            log.warning(
                "dataset %s: the class mix moved by %.1f points (threshold %.1f) against %s",
                version,
                100 * changes["max_shift"],
                100 * mix_threshold,
                changes["previous_version"],
            )
        files = channel_files(bucket, root, version, entries)
        s3io.parallel(lambda key: s3io.put_json(s3, bucket, key, files[key]), sorted(files), workers, "channel files")

        manifest = {
            "version": version,
            "root": root,
            "bucket": bucket,
            "manifest_key": manifest_key,
            "created": _now(),
            "layout": "packs/1",
            "counts": counts,
            "classes_missing": thin,
            "splits": {"train": 0.8, "valid": 0.1, "test": 0.1, "assignment": "sha256(image_id) % 100"},
            "source": source,
            "settings": settings_used or {},
            "changes": changes,
            "entries": entries,
            "rejects": rejects,
        }
        summary = summary_of(manifest, bucket, copied=0, skipped=0)  # a version copies no image
        # Last: its presence means "complete". Its object metadata carries the summary, so a re-run learns
        # everything it needs from one HEAD instead of downloading a manifest with thousands of entries.
        body = json.dumps(manifest, indent=1, sort_keys=True).encode()
        s3.put_object(
            Bucket=bucket,
            Key=manifest_key,
            Body=body,
            ContentType="application/json",
            Metadata={"summary": json.dumps({k: summary[k] for k in _HEAD_FIELDS}, separators=(",", ":"))},
        )
        _point_latest(s3, bucket, root, version, manifest_key, manifest["created"], latest)
    log.info("published dataset %s: %s", version, manifest["counts"])
    return summary
