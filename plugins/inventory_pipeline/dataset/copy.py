"""copy_images: validate the selected pairs, then copy them server-side into the project's raw area.

- What to skip is decided from ONE listing of the destination's raw area (same key, size and ETag as the
  pinned source object: skip it, and skip its validation), not a HEAD per object.
- Validation reads no large image: metadata GET (parses, EXPECTED_QUANTITY an int 1-5 equal to the label) and
  ranged GETs of an image's first bytes (JPEG signature) and last bytes (end marker: not truncated), its size
  known from the source listing. An image of at most SMALL_IMAGE_BYTES (most ABID photos: median 47 KB) is
  read whole in one GET instead: one round trip costs more than the bytes, and S3 bills per request.
- Everything is validated before anything is copied: when the reject ratio exceeds the threshold, nothing is
  copied and the task fails with the reject list.
- Copies are CopyObject calls in a bounded thread pool: the bytes never leave S3. Every read and copy names
  the ETag the selection pinned (If-Match): bytes that changed since selection fail loudly, never mix in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from inventory_pipeline.dataset import s3io
from inventory_pipeline.dataset.abid import (
    Pair,
    check_image_head,
    check_image_tail,
    check_quantity,
    id_shards,
    image_key,
    metadata_key,
)
from inventory_pipeline.dataset.errors import TooManyRejects
from inventory_pipeline.dataset.source_index import Pinned

log = logging.getLogger(__name__)
HEAD_BYTES = 16
TAIL_BYTES = 32
SMALL_IMAGE_BYTES = 64 * 1024


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


def list_raw(
    s3: Any, bucket: str, root: str, image_ids: list[str], workers: int
) -> dict[str, s3io.ObjectInfo]:
    """The one listing of the raw area that decides what to skip: the id shards in use, concurrently."""
    folders = (f"{raw_prefix(root)}bin-images/", f"{raw_prefix(root)}metadata/")
    prefixes = [folder + shard for folder in folders for shard in id_shards(image_ids)]
    return s3io.list_prefixes(s3, bucket, prefixes, workers)


def plan_copies(
    selected: list[Pinned], raw_index: dict[str, s3io.ObjectInfo], dest_raw: str
) -> list[Planned]:
    """What each pair still needs: an object in the raw area with the same size and ETag is skipped."""
    return [
        Planned(
            item.pair,
            item.image,
            item.metadata,
            copy_image=raw_index.get(image_key(dest_raw, item.pair.image_id)) != item.image,
            copy_metadata=raw_index.get(metadata_key(dest_raw, item.pair.image_id)) != item.metadata,
        )  # fmt: skip
        for item in selected
    ]


def _read(s3: Any, bucket: str, key: str, etag: str, byte_range: str | None = None) -> bytes | None:
    """The pinned version's bytes, or None when the key was deleted after the listing.

    A key that now holds other bytes answers 412, raised as a DatasetError by the caller's `explained`.
    """
    kwargs = {"Bucket": bucket, "Key": key, "IfMatch": etag}
    if byte_range:
        kwargs["Range"] = byte_range
    try:
        return s3.get_object(**kwargs)["Body"].read()
    except Exception as exc:
        if s3io.is_missing(exc):
            return None
        raise


def validate(s3: Any, source_bucket: str, source_prefix: str, item: Planned) -> dict[str, str] | None:
    """The reject ({key, reason}) for a pair that needs copying, or None when it is valid."""
    meta_key = metadata_key(source_prefix, item.pair.image_id)
    img_key = image_key(source_prefix, item.pair.image_id)
    if item.image.size == 0:  # known from the listing: no request needed
        return {"key": img_key, "reason": "image is empty (0 bytes)"}
    raw = _read(s3, source_bucket, meta_key, item.metadata.etag)
    problem = "missing in source" if raw is None else check_quantity(raw, item.pair.label)
    if problem:
        return {"key": meta_key, "reason": problem}
    if item.image.size <= SMALL_IMAGE_BYTES:  # both ends in one request
        whole = _read(s3, source_bucket, img_key, item.image.etag)
        head, tail = (None, None) if whole is None else (whole[:HEAD_BYTES], whole[-TAIL_BYTES:])
    else:
        head = _read(s3, source_bucket, img_key, item.image.etag, byte_range=f"bytes=0-{HEAD_BYTES - 1}")
        tail = None
    problem = "missing in source" if head is None else check_image_head(head, item.image.size)
    if not problem:
        if tail is None:
            tail = _read(s3, source_bucket, img_key, item.image.etag, byte_range=f"bytes=-{TAIL_BYTES}")
        problem = "missing in source" if tail is None else check_image_tail(tail)
    return {"key": img_key, "reason": problem} if problem else None


def copy_selection(
    s3: Any,
    selected: list[Pinned],
    source_bucket: str,
    source_prefix: str,
    dest_bucket: str,
    dest_root: str,
    workers: int = 32,
    reject_threshold: float = 0.05,
    earlier_rejects: list[dict[str, str]] | None = None,
    raw_index: dict[str, s3io.ObjectInfo] | None = None,
) -> CopyResult:
    """Validate every pinned pair that is not already in place, then copy the valid ones server-side.

    `earlier_rejects` are the select stage's (missing keys, unreadable metadata found while listing): they
    count against the threshold like this stage's own. `raw_index` is a listing of the raw area taken moments
    ago in this process (build_dataset); without it the raw area is listed here.
    """
    dest_raw = raw_prefix(dest_root)
    if raw_index is None:
        raw_index = list_raw(s3, dest_bucket, dest_root, [p.pair.image_id for p in selected], workers)
    planned = plan_copies(selected, raw_index, dest_raw)
    rejects: list[dict[str, str]] = []
    to_check = [p for p in planned if p.copy_image or p.copy_metadata]
    log.info(
        "%d selected: %d already in s3://%s/%s, %d to validate and copy, %d rejected by the select stage",
        len(selected), len(planned) - len(to_check), dest_bucket, dest_raw, len(to_check),
        len(earlier_rejects or []),
    )  # fmt: skip

    valid: list[Planned] = [p for p in planned if not (p.copy_image or p.copy_metadata)]
    with s3io.explained(source_bucket, "validating"):
        checked = s3io.parallel(
            lambda item: validate(s3, source_bucket, source_prefix, item), to_check, workers, "validated"
        )
    for item, reject in checked:
        if reject:
            rejects.append(reject)
            log.warning("rejected %s: %s", reject["key"], reject["reason"])  # the select stage logged its own
        else:
            valid.append(item)
    rejects = sorted([*(earlier_rejects or []), *rejects], key=lambda r: r["key"])

    candidates = len(selected) + len(earlier_rejects or [])
    ratio = len(rejects) / candidates if candidates else 0.0
    if ratio > reject_threshold:
        listing = "\n".join(f"  {r['key']}: {r['reason']}" for r in rejects[:200])
        more = f"\n  ... and {len(rejects) - 200} more" if len(rejects) > 200 else ""
        raise TooManyRejects(
            f"{len(rejects)} of {candidates} selected images were rejected ({ratio:.1%} > threshold "
            f"{reject_threshold:.1%}); nothing was copied or published. Fix or drop them, or raise "
            f"reject_threshold.\n{listing}{more}",
            rejects,
        )
    if rejects:
        log.warning("%d of %d selected images rejected (%.1f%%, threshold %.1f%%): continuing without them",
                    len(rejects), candidates, 100 * ratio, 100 * reject_threshold)  # fmt: skip

    new = sum(1 for p in planned if image_key(dest_raw, p.pair.image_id) not in raw_index)
    result = CopyResult(rejects=rejects, new=new)
    jobs = []
    for item in valid:
        image_id = item.pair.image_id
        for needed, key_of, info in ((item.copy_image, image_key, item.image),
                                     (item.copy_metadata, metadata_key, item.metadata)):  # fmt: skip
            if needed:
                jobs.append((key_of(source_prefix, image_id), key_of(dest_raw, image_id), info.etag))
            else:
                result.skipped += 1

    def copy(job: tuple[str, str, str]) -> str:
        src, dst, etag = job
        # CopySourceIfMatch: S3 refuses (412) to copy bytes other than the ones listed and validated.
        source = {"Bucket": source_bucket, "Key": src}
        response = s3.copy_object(Bucket=dest_bucket, Key=dst, CopySource=source, CopySourceIfMatch=etag)
        return response["CopyObjectResult"]["ETag"].strip('"')

    with s3io.explained(source_bucket, f"copying into s3://{dest_bucket}/{dest_raw}"):
        copied = s3io.parallel(copy, jobs, workers, "copied")
    result.copied = len(copied)
    # The raw copy's own ETag: equal to the source's for plain objects, not under SSE-KMS bucket encryption,
    # so the split stage guards its copies with this one.
    raw_etags = {key: info.etag for key, info in raw_index.items()} | {
        dst: etag for (_, dst, _), etag in copied
    }
    result.accepted = sorted(
        (
            {
                "image_id": item.pair.image_id,
                "label": item.pair.label,
                "image_key": image_key(dest_raw, item.pair.image_id),
                "image_etag": item.image.etag,
                "image_size": item.image.size,
                "raw_image_etag": raw_etags[image_key(dest_raw, item.pair.image_id)],
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
