"""S3 reads and listings the data plane needs, with errors translated into ones a person can act on."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, TypeVar

from inventory_pipeline.aws.s3_paths import MISSING_CODES, is_missing, split_s3_uri
from inventory_pipeline.dataset.errors import DatasetError, NoCredentials, SourceChanged, SourceNotFound

__all__ = ["MISSING_CODES", "is_missing", "split_s3_uri"]  # the package's one definition, re-exported here

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str


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
        if code in ("PreconditionFailed", "412"):
            raise SourceChanged(
                f"an object in s3://{bucket} changed since it was selected (while {what}: its ETag no longer "
                f"matches the selected one): {exc}; nothing was published: re-run to select the new version"
            ) from exc
        raise DatasetError(f"S3 error {code} while {what} (s3://{bucket}): {exc}") from exc


LISTING_LOG_EVERY = 10_000  # keys; a listing of the public bucket's 500k+ objects takes minutes


def list_objects(s3: Any, bucket: str, prefix: str) -> dict[str, ObjectInfo]:
    """Every key under `prefix` with its size and ETag (one paginated listing)."""
    found: dict[str, ObjectInfo] = {}
    next_log = LISTING_LOG_EVERY
    with explained(bucket, f"listing {prefix or '/'}"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                found[obj["Key"]] = ObjectInfo(obj["Size"], obj["ETag"].strip('"'))
            if len(found) >= next_log:
                log.info("listing s3://%s/%s: %d keys so far", bucket, prefix, len(found))
                next_log += LISTING_LOG_EVERY
    return found


def list_prefixes(s3: Any, bucket: str, prefixes: Iterable[str], workers: int = 16) -> dict[str, ObjectInfo]:
    """Like list_objects over each prefix, all listed concurrently (each one paginated)."""
    prefixes = sorted(set(prefixes))
    found: dict[str, ObjectInfo] = {}
    if not prefixes:
        return found
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(prefixes)))) as pool:
        for part in pool.map(lambda prefix: list_objects(s3, bucket, prefix), prefixes):
            found.update(part)
    return found


def get_bytes(s3: Any, bucket: str, key: str, byte_range: str | None = None) -> bytes:
    kwargs = {"Bucket": bucket, "Key": key}
    if byte_range:
        kwargs["Range"] = byte_range
    return s3.get_object(**kwargs)["Body"].read()


def read_json(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(get_bytes(s3, bucket, key))


def read_json_object(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """A small document of ours (a record, a pointer), or None when it is absent, not JSON or not an object:
    the caller then takes the long way or writes it anew."""
    try:
        document = read_json(s3, bucket, key)
    except Exception as exc:
        if is_missing(exc) or isinstance(exc, ValueError):
            return None
        raise
    return document if isinstance(document, dict) else None


def put_json(s3: Any, bucket: str, key: str, document: Any) -> str:
    body = json.dumps(document, indent=1, sort_keys=True, default=str).encode()
    response = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    return response["ETag"].strip('"')


def etag(s3: Any, bucket: str, key: str) -> str | None:
    """The object's ETag (unquoted), or None when there is no such object."""
    from botocore.exceptions import ClientError

    try:
        return s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def exists(s3: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if is_missing(exc):
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


def parallel(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    what: str,
    consume: Callable[[T, R], None] | None = None,
) -> list[tuple[T, R]]:
    """(item, fn(item)) for every item, in a bounded pool, in completion order, with progress lines.

    With `consume`, each result is handed to it (in this thread) as it completes and not kept: a stage that
    reads image bytes holds only those not yet consumed. The first failure cancels what has not started yet
    and is raised: a broken run stops promptly instead of finishing thousands of requests first (every stage
    is idempotent, so a re-run picks up from there).
    """
    progress = Progress(what, len(items))
    done: list[tuple[T, R]] = []
    if not items:
        return done
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        futures = {pool.submit(fn, item): item for item in items}
        try:
            for future in as_completed(futures):
                item = futures.pop(future)
                if consume is None:
                    done.append((item, future.result()))
                else:
                    consume(item, future.result())
                progress.step()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return done
