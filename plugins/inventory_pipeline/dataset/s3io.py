"""S3 reads and listings the data plane needs, with errors translated into ones a person can act on."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from inventory_pipeline.dataset.errors import DatasetError, NoCredentials, SourceNotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


@contextlib.contextmanager
def explained(bucket: str, what: str) -> Iterator[None]:
    """Turn botocore's errors into DatasetErrors naming the bucket and what we were doing."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise NoCredentials(
            f"no AWS credentials while {what} (s3://{bucket}): configure the aws_default connection "
            "or the environment's credentials"
        ) from exc
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404", "NotFound"):
            raise SourceNotFound(f"bucket s3://{bucket} does not exist (while {what})") from exc
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            raise SourceNotFound(f"access denied to s3://{bucket} (while {what})") from exc
        raise DatasetError(f"S3 error {code} while {what} (s3://{bucket}): {exc}") from exc


def list_objects(s3: Any, bucket: str, prefix: str) -> dict[str, ObjectInfo]:
    """Every key under `prefix` with its size and ETag (one paginated listing)."""
    found: dict[str, ObjectInfo] = {}
    with explained(bucket, f"listing {prefix or '/'}"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                found[obj["Key"]] = ObjectInfo(obj["Size"], obj["ETag"].strip('"'))
    return found


def list_objects_sharded(
    s3: Any, bucket: str, prefix: str, shards: Iterable[str], workers: int = 16
) -> dict[str, ObjectInfo]:
    """Like list_objects, but lists `prefix + shard` for each shard in parallel.

    For a file list naming a few thousand of the public bucket's 500k+ images, listing only the id
    prefixes in use, concurrently, is far cheaper than one sequential listing of everything.
    """
    shards = sorted(set(shards))
    if not shards:
        return {}
    found: dict[str, ObjectInfo] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(shards)))) as pool:
        for part in pool.map(lambda shard: list_objects(s3, bucket, prefix + shard), shards):
            found.update(part)
    return found


def get_bytes(s3: Any, bucket: str, key: str, byte_range: str | None = None) -> bytes:
    kwargs = {"Bucket": bucket, "Key": key}
    if byte_range:
        kwargs["Range"] = byte_range
    return s3.get_object(**kwargs)["Body"].read()


def read_json(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(get_bytes(s3, bucket, key))


def put_json(s3: Any, bucket: str, key: str, document: Any) -> str:
    body = json.dumps(document, indent=1, sort_keys=True, default=str).encode()
    response = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    return response["ETag"].strip('"')


def exists(s3: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


class Progress:
    """Counted log lines at intervals, so long work shows it is moving."""

    def __init__(self, what: str, total: int, every_fraction: float = 0.1, min_every: int = 200):
        self.what, self.total, self.done = what, total, 0
        self.every = max(min_every, int(total * every_fraction)) if total else 1
        self._next = self.every

    def step(self, n: int = 1) -> None:
        self.done += n
        if self.done >= self._next or self.done == self.total:
            log.info("%s: %d/%d", self.what, self.done, self.total)
            while self._next <= self.done:
                self._next += self.every
