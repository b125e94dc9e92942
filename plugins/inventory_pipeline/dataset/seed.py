"""Seed a bucket with synthetic ABID-like data in the public bucket's layout (the demo, tests, benchmarks)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from inventory_pipeline.dataset.abid import image_key, metadata_key
from inventory_pipeline.dataset.s3io import Progress
from inventory_pipeline.dataset.synthetic import SyntheticImage, file_list, generate, image_id_for

log = logging.getLogger(__name__)


def ensure_bucket(s3: Any, bucket: str) -> None:
    """Create `bucket` unless it exists (outside us-east-1, S3 wants the region as a LocationConstraint)."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise  # 403: the name is taken by someone else's bucket; creating it cannot help
    region = s3.meta.region_name
    if region and region != "us-east-1":
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    else:
        s3.create_bucket(Bucket=bucket)
    log.info("created bucket s3://%s", bucket)


def synthetic_objects(item: SyntheticImage, prefix: str = "") -> tuple[tuple[str, bytes, str], ...]:
    """A photo and its metadata as the public bucket stores them: (key, body, content type) each."""
    metadata = json.dumps(item.metadata, indent=4, sort_keys=True).encode()
    return (
        (image_key(prefix, item.image_id), item.jpeg, "image/jpeg"),
        (metadata_key(prefix, item.image_id), metadata, "application/json"),
    )


def file_list_body(listed: Mapping[str, list[str]]) -> bytes:
    return json.dumps(dict(listed)).encode()


def seed_synthetic(
    s3: Any,
    bucket: str,
    prefix: str = "",
    images: int = 600,
    seed: int = 0,
    balance: Mapping[int, float] | None = None,
    workers: int = 16,
    add: bool = False,
    rendered: Sequence[SyntheticImage] | None = None,
) -> dict[str, Any]:
    """Write `images` synthetic photos + metadata under `<prefix>` and `<prefix>file_list.json`.

    `add=True` writes `images` new photos after the ones the bucket's file list already names and extends the
    list (a week in which new photos arrived); the existing photos are left untouched. `rendered`: those photos,
    rendered beforehand (`generate` with the same seed): they must carry the ids that come next, or nothing is
    written."""
    if images < 1:
        raise ValueError(f"images must be at least 1, got {images}")
    ensure_bucket(s3, bucket)

    progress = Progress("seeded", images)

    def upload(item: SyntheticImage) -> SyntheticImage:
        for key, body, content_type in synthetic_objects(item, prefix):
            s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        return item

    key = f"{prefix}file_list.json"
    existing: dict[str, list[str]] = {}
    if add:
        existing = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    start = 1 + sum(len(keys) for keys in existing.values())
    if rendered is not None:
        expected = [image_id_for(start + offset) for offset in range(images)]
        if [item.image_id for item in rendered] != expected:
            got = f"{rendered[0].image_id}..{rendered[-1].image_id}" if rendered else "none"
            raise ValueError(f"the rendered photos must be ids {expected[0]}..{expected[-1]}, got {got}")
    photos = rendered if rendered is not None else generate(images, seed=seed, balance=balance, start_index=start)
    written = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # Photos not handed over are rendered here while uploads run in the pool; results come back in id order.
        for item in pool.map(upload, photos):
            written.append(item)
            progress.step()
    listed = file_list(written)
    merged = {label: existing.get(label, []) + listed.get(label, []) for label in sorted({*existing, *listed})}
    s3.put_object(Bucket=bucket, Key=key, Body=file_list_body(merged))
    counts = Counter(item.label for item in written)
    log.info("seeded s3://%s/%s with %d synthetic images %s", bucket, prefix, len(written), dict(counts))
    return {
        "bucket": bucket,
        "prefix": prefix,
        "images": len(written),
        "counts": {str(k): counts.get(k, 0) for k in range(1, 6)},
        "file_list_key": key,
    }
