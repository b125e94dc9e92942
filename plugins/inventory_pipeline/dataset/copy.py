"""copy_images: validate the selected pairs, then store each valid photo once, in the raw area's packs.

- What is already there is decided from the raw index (dataset.packs: one listing of `raw/index/` and a GET per
  past run's document), not a request per object: an image stored with the pinned ETag is not read again, and a
  pair validated before with the same metadata ETag and label is not validated again.
- Validation reads each new image whole (one GET: its JPEG signature, size and end marker, so a truncated upload
  is a reject) and its metadata (one GET: parses, EXPECTED_QUANTITY an int 1-5 equal to the label). The bytes
  just read are what gets stored: packed per split (dataset.packs), no server-side copy per image. A pair whose
  image is stored but whose metadata changed (a corrected label) costs its metadata GET only.
- Nothing is recorded before everything is validated: when the reject ratio exceeds the threshold, the packs
  this run wrote are deleted, no index document is written, and the task fails with the reject list.
- Every read names the ETag the selection pinned (If-Match): bytes that changed since selection fail loudly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from inventory_pipeline.dataset import s3io
from inventory_pipeline.dataset.abid import (
    Pair,
    check_image_head,
    check_image_tail,
    check_quantity,
    image_key,
    metadata_key,
)
from inventory_pipeline.dataset.errors import TooManyRejects
from inventory_pipeline.dataset.packs import PackWriter, RawIndex, Stored, read_index, write_index
from inventory_pipeline.dataset.source_index import Pinned
from inventory_pipeline.dataset.split import assign_split

log = logging.getLogger(__name__)
HEAD_BYTES = 16
TAIL_BYTES = 32


@dataclass
class Planned:
    pair: Pair
    image: s3io.ObjectInfo
    metadata: s3io.ObjectInfo
    stored: Stored | None  # where the image already is (pinned ETag), None when it must be read and stored
    validated: bool  # this (image, metadata, label) was validated by an earlier run


@dataclass
class CopyResult:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, str]] = field(default_factory=list)
    copied: int = 0  # images stored in packs by this run
    skipped: int = 0  # images already stored
    new: int = 0  # selected images not yet in the raw area ("new since the last run")
    revalidated: int = 0  # stored images whose metadata changed (e.g. a corrected label): validated again
    packs: list[str] = field(default_factory=list)
    index_key: str | None = None


def raw_prefix(root: str) -> str:
    return f"{root}raw/"


def list_raw(s3: Any, bucket: str, root: str, workers: int) -> RawIndex:
    """What the raw area holds and what was validated, from its index."""
    return read_index(s3, bucket, root, workers)


def plan_copies(selected: list[Pinned], raw: RawIndex) -> list[Planned]:
    """What each pair still needs: its image stored (same ETag) is skipped, a validated pair is not re-read."""
    return [
        Planned(
            item.pair,
            item.image,
            item.metadata,
            stored=raw.stored.get((item.pair.image_id, item.image.etag)),
            validated=(item.pair.image_id, item.image.etag, item.metadata.etag, item.pair.label) in raw.validated,
        )
        for item in selected
    ]


def _read(s3: Any, bucket: str, key: str, etag: str) -> bytes | None:
    """The pinned version's bytes, or None when the key was deleted after the listing.

    A key that now holds other bytes answers 412, raised as a DatasetError by the caller's `explained`.
    """
    try:
        return s3.get_object(Bucket=bucket, Key=key, IfMatch=etag)["Body"].read()
    except Exception as exc:
        if s3io.is_missing(exc):
            return None
        raise


def validate(
    s3: Any, source_bucket: str, source_prefix: str, item: Planned
) -> tuple[dict[str, str] | None, bytes | None]:
    """(reject or None, the image's bytes when it must be stored) for a pair that needs validating."""
    meta_key = metadata_key(source_prefix, item.pair.image_id)
    img_key = image_key(source_prefix, item.pair.image_id)
    if item.stored is None and item.image.size == 0:  # known from the listing: no request needed
        return {"key": img_key, "reason": "image is empty (0 bytes)"}, None
    raw = _read(s3, source_bucket, meta_key, item.metadata.etag)
    problem = "missing in source" if raw is None else check_quantity(raw, item.pair.label)
    if problem:
        return {"key": meta_key, "reason": problem}, None
    if item.stored is not None:  # the image was validated and stored with this ETag: only the label changed
        return None, None
    whole = _read(s3, source_bucket, img_key, item.image.etag)
    if whole is None:
        return {"key": img_key, "reason": "missing in source"}, None
    problem = check_image_head(whole[:HEAD_BYTES], len(whole)) or check_image_tail(whole[-TAIL_BYTES:])
    return ({"key": img_key, "reason": problem}, None) if problem else (None, whole)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


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
    raw_index: RawIndex | None = None,
) -> CopyResult:
    """Validate every pinned pair not validated before, store the new images in packs, record the index.

    `earlier_rejects` are the select stage's (missing keys, unreadable metadata found while listing): they
    count against the threshold like this stage's own. `raw_index`: the raw index read moments ago in this
    process (build_dataset); without it it is read here.
    """
    if raw_index is None:
        raw_index = list_raw(s3, dest_bucket, dest_root, workers)
    planned = plan_copies(selected, raw_index)
    to_check = [p for p in planned if not p.validated]
    log.info(
        "%d selected: %d validated before, %d to validate (%d of them already stored), %d rejected by the select stage",
        len(selected),
        len(planned) - len(to_check),
        len(to_check),
        sum(p.stored is not None for p in to_check),
        len(earlier_rejects or []),
    )

    ids_by_split: dict[str, list[str]] = {}
    for p in to_check:
        if p.stored is None:
            ids_by_split.setdefault(assign_split(p.pair.image_id), []).append(p.pair.image_id)
    groups = PackWriter.plan(ids_by_split)
    writer = PackWriter(s3, dest_bucket, dest_root, groups)
    order = {image_id: n for n, image_id in enumerate(i for _, ids in groups for i in ids)}
    to_check.sort(key=lambda p: order.get(p.pair.image_id, -1))  # reads in pack order: few packs in memory
    rejects: list[dict[str, str]] = []
    valid: list[Planned] = [p for p in planned if p.validated]
    revalidated: list[Planned] = []

    def consume(item: Planned, outcome: tuple[dict[str, str] | None, bytes | None]) -> None:
        reject, data = outcome
        if reject:
            rejects.append(reject)
            log.warning("rejected %s: %s", reject["key"], reject["reason"])  # the select stage logged its own
        else:
            valid.append(item)
            if item.stored is not None:
                revalidated.append(item)
        if item.stored is None:
            writer.done(item.pair.image_id, data)

    try:
        with s3io.explained(source_bucket, f"validating into s3://{dest_bucket}/{raw_prefix(dest_root)}"):
            s3io.parallel(
                lambda item: validate(s3, source_bucket, source_prefix, item),
                to_check,
                workers,
                "validated",
                consume=consume,
            )
    except BaseException:  # nothing is recorded: remove what this attempt wrote (a retry writes the same packs)
        with contextlib.suppress(Exception):
            writer.discard()
        raise
    rejects = sorted([*(earlier_rejects or []), *rejects], key=lambda r: r["key"])

    candidates = len(selected) + len(earlier_rejects or [])
    ratio = len(rejects) / candidates if candidates else 0.0
    if ratio > reject_threshold:
        with s3io.explained(dest_bucket, "removing the refused run's packs"):
            writer.discard()
        listing = "\n".join(f"  {r['key']}: {r['reason']}" for r in rejects[:200])
        more = f"\n  ... and {len(rejects) - 200} more" if len(rejects) > 200 else ""
        raise TooManyRejects(
            f"{len(rejects)} of {candidates} selected images were rejected ({ratio:.1%} > threshold "
            f"{reject_threshold:.1%}); nothing was copied or published. Fix or drop them, or raise "
            f"reject_threshold.\n{listing}{more}",
            rejects,
        )
    if rejects:
        log.warning(
            "%d of %d selected images rejected (%.1f%%, threshold %.1f%%): continuing without them",
            len(rejects),
            candidates,
            100 * ratio,
            100 * reject_threshold,
        )

    def location(item: Planned) -> Stored:
        return item.stored or writer.locations[item.pair.image_id]

    validated_now = [p for p in valid if not p.validated]
    entries = {
        p.pair.image_id: {
            "image_etag": p.image.etag,
            "metadata_etag": p.metadata.etag,
            "label": p.pair.label,
            "pack": location(p).pack,
            "offset": location(p).offset,
            "size": location(p).size,
        }
        for p in validated_now
    }
    with s3io.explained(dest_bucket, "recording the raw index"):
        index_key = write_index(s3, dest_bucket, dest_root, entries, _now())
    stored_ids = {image_id for image_id, _ in raw_index.stored}
    result = CopyResult(
        rejects=rejects,
        copied=len(writer.locations),
        skipped=len(valid) - len(writer.locations),
        new=sum(1 for p in planned if p.pair.image_id not in stored_ids),
        revalidated=len(revalidated),
        packs=list(writer.written),
        index_key=index_key,
    )
    result.accepted = sorted(
        (
            {
                "image_id": item.pair.image_id,
                "label": item.pair.label,
                "image_etag": item.image.etag,
                "image_size": item.image.size,
                "pack": location(item).pack,
                "offset": location(item).offset,
                "size": location(item).size,
                "metadata_etag": item.metadata.etag,
                "source_image_key": image_key(source_prefix, item.pair.image_id),
                "source_metadata_key": metadata_key(source_prefix, item.pair.image_id),
            }
            for item in valid
        ),
        key=lambda a: a["image_id"],
    )
    log.info(
        "copy done: %d images stored in %d pack(s), %d already stored (%d re-validated), %d rejected",
        result.copied,
        len(result.packs),
        result.skipped,
        result.revalidated,
        len(rejects),
    )
    return result
