"""copy_images: validate the selected pairs, then copy them server-side into the project's raw area.

- What to skip is decided from ONE listing of the destination (same key, size and ETag), not a HEAD per
  object.
- Validation reads no image: metadata GET (parses, EXPECTED_QUANTITY an int 1-5 equal to the label) and a
  ranged GET of an image's first bytes (JPEG signature, plausible size from the listing).
- Everything is validated before anything is copied: when the reject ratio exceeds the threshold, nothing is
  copied and the task fails with the reject list.
- Copies are CopyObject calls in a bounded thread pool: the bytes never leave S3.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from inventory_pipeline.dataset import s3io
from inventory_pipeline.dataset.abid import Pair, check_image_head, check_quantity, image_key, metadata_key
from inventory_pipeline.dataset.errors import TooManyRejects

log = logging.getLogger(__name__)
HEAD_BYTES = 16


@dataclass
class Planned:
    pair: Pair
    image: s3io.ObjectInfo
    metadata: s3io.ObjectInfo
    copy_image: bool
    copy_metadata: bool


@dataclass
class CopyResult:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, str]] = field(default_factory=list)
    copied: int = 0  # objects copied (an image and its metadata count as two)
    skipped: int = 0  # objects already in place
    new: int = 0  # selected images not yet in the raw area ("new since the last run")


def raw_prefix(root: str) -> str:
    return f"{root}raw/"


def _shards(pairs: list[Pair]) -> list[str]:
    return sorted({p.image_id[:2] for p in pairs})


def plan_copies(
    s3: Any, pairs: list[Pair], source_bucket: str, source_prefix: str, dest_bucket: str, dest_raw: str,
    workers: int,
) -> tuple[list[Planned], list[dict[str, str]]]:  # fmt: skip
    """Pairs to copy (or already in place) and rejects known from listings alone (missing, empty)."""
    shards = _shards(pairs)
    images = s3io.list_objects_sharded(s3, source_bucket, f"{source_prefix}bin-images/", shards, workers)
    metas = s3io.list_objects_sharded(s3, source_bucket, f"{source_prefix}metadata/", shards, workers)
    existing = s3io.list_objects(s3, dest_bucket, dest_raw)
    planned, rejects = [], []
    for pair in pairs:
        src_image = image_key(source_prefix, pair.image_id)
        src_meta = metadata_key(source_prefix, pair.image_id)
        if src_image not in images:
            rejects.append({"key": src_image, "reason": "missing in source"})
            continue
        if src_meta not in metas:
            rejects.append({"key": src_meta, "reason": "missing in source"})
            continue
        image, meta = images[src_image], metas[src_meta]
        if image.size == 0:
            rejects.append({"key": src_image, "reason": "image is empty (0 bytes)"})
            continue
        planned.append(
            Planned(
                pair, image, meta,
                copy_image=existing.get(image_key(dest_raw, pair.image_id)) != image,
                copy_metadata=existing.get(metadata_key(dest_raw, pair.image_id)) != meta,
            )
        )  # fmt: skip
    return planned, rejects


def validate(s3: Any, source_bucket: str, source_prefix: str, item: Planned) -> dict[str, str] | None:
    """The reject ({key, reason}) for a pair that needs copying, or None when it is valid."""
    meta_key = metadata_key(source_prefix, item.pair.image_id)
    problem = check_quantity(s3io.get_bytes(s3, source_bucket, meta_key), item.pair.label)
    if problem:
        return {"key": meta_key, "reason": problem}
    img_key = image_key(source_prefix, item.pair.image_id)
    head = s3io.get_bytes(s3, source_bucket, img_key, byte_range=f"bytes=0-{HEAD_BYTES - 1}")
    problem = check_image_head(head, item.image.size)
    return {"key": img_key, "reason": problem} if problem else None


def copy_selection(
    s3: Any,
    pairs: list[Pair],
    source_bucket: str,
    source_prefix: str,
    dest_bucket: str,
    dest_root: str,
    workers: int = 32,
    reject_threshold: float = 0.05,
) -> CopyResult:
    dest_raw = raw_prefix(dest_root)
    with s3io.explained(source_bucket, "listing the source"):
        planned, rejects = plan_copies(s3, pairs, source_bucket, source_prefix, dest_bucket, dest_raw, workers)
    to_check = [p for p in planned if p.copy_image or p.copy_metadata]
    log.info(
        "%d selected: %d already in s3://%s/%s, %d to validate and copy, %d rejected from listings",
        len(pairs), len(planned) - len(to_check), dest_bucket, dest_raw, len(to_check), len(rejects),
    )  # fmt: skip

    valid: list[Planned] = [p for p in planned if not (p.copy_image or p.copy_metadata)]
    progress = s3io.Progress("validated", len(to_check))
    with s3io.explained(source_bucket, "validating"), ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(validate, s3, source_bucket, source_prefix, item): item for item in to_check}
        for future in as_completed(futures):
            item, reject = futures[future], future.result()
            progress.step()
            if reject:
                rejects.append(reject)
            else:
                valid.append(item)
    rejects.sort(key=lambda r: r["key"])

    ratio = len(rejects) / len(pairs) if pairs else 0.0
    if ratio > reject_threshold:
        listing = "\n".join(f"  {r['key']}: {r['reason']}" for r in rejects[:200])
        raise TooManyRejects(
            f"{len(rejects)} of {len(pairs)} selected images were rejected ({ratio:.1%} > threshold "
            f"{reject_threshold:.1%}); nothing was copied or published.\n{listing}",
            rejects,
        )
    for reject in rejects:
        log.warning("rejected %s: %s", reject["key"], reject["reason"])

    result = CopyResult(rejects=rejects, new=sum(1 for p in planned if p.copy_image))
    jobs = []
    for item in valid:
        image_id = item.pair.image_id
        for needed, key_of in ((item.copy_image, image_key), (item.copy_metadata, metadata_key)):
            if needed:
                jobs.append((key_of(source_prefix, image_id), key_of(dest_raw, image_id)))
            else:
                result.skipped += 1
    progress = s3io.Progress("copied", len(jobs))
    copying = s3io.explained(dest_bucket, "copying into the raw area")
    with copying, ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(s3.copy_object, Bucket=dest_bucket, Key=dst, CopySource={"Bucket": source_bucket, "Key": src})
            for src, dst in jobs
        ]
        for future in as_completed(futures):
            future.result()
            progress.step()
            result.copied += 1
    result.accepted = sorted(
        (
            {
                "image_id": item.pair.image_id,
                "label": item.pair.label,
                "image_key": image_key(dest_raw, item.pair.image_id),
                "image_etag": item.image.etag,
                "image_size": item.image.size,
                "metadata_key": metadata_key(dest_raw, item.pair.image_id),
                "metadata_etag": item.metadata.etag,
                "source_image_key": image_key(source_prefix, item.pair.image_id),
            }
            for item in valid
        ),
        key=lambda a: a["image_id"],
    )
    log.info("copy done: %d copied, %d skipped, %d rejected", result.copied, result.skipped, len(rejects))
    return result
