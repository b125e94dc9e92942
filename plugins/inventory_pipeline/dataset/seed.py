"""Seed a bucket with synthetic ABID-like data in the public bucket's layout (the demo, tests, benchmarks)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from inventory_pipeline.dataset.abid import image_key, metadata_key
from inventory_pipeline.dataset.synthetic import SyntheticImage, file_list, generate

log = logging.getLogger(__name__)


def ensure_bucket(s3: Any, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)


def seed_synthetic(
    s3: Any,
    bucket: str,
    prefix: str = "",
    images: int = 600,
    seed: int = 0,
    balance: Mapping[int, float] | None = None,
    workers: int = 16,
) -> dict[str, Any]:
    """Write `images` synthetic photos + metadata under `<prefix>` and `<prefix>file_list.json`."""
    ensure_bucket(s3, bucket)

    def upload(item: SyntheticImage) -> SyntheticImage:
        s3.put_object(Bucket=bucket, Key=image_key(prefix, item.image_id), Body=item.jpeg, ContentType="image/jpeg")
        body = json.dumps(item.metadata, indent=4, sort_keys=True).encode()
        s3.put_object(Bucket=bucket, Key=metadata_key(prefix, item.image_id), Body=body,
                      ContentType="application/json")  # fmt: skip
        return item

    with ThreadPoolExecutor(max_workers=workers) as pool:
        written = list(pool.map(upload, generate(images, seed=seed, balance=balance)))
    key = f"{prefix}file_list.json"
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(file_list(written)).encode())
    counts = Counter(item.label for item in written)
    log.info("seeded s3://%s/%s with %d synthetic images %s", bucket, prefix, len(written), dict(counts))
    return {
        "bucket": bucket,
        "prefix": prefix,
        "images": len(written),
        "counts": {str(k): counts.get(k, 0) for k in range(1, 6)},
        "file_list_key": key,
    }
