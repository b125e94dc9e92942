"""One seam for reading and writing a job's debug output, system metrics and rule output, on local disk or S3.

Like smdebug's Local*/S3* readers, the rule engine never cares where a trial lives: it asks a `Storage` for
relative keys. smdebug's own S3 access uses a process-wide boto3 client built from the environment (no
endpoint, no credentials of ours), so S3 trials are mirrored into a local directory (`mirror`) and read with
smdebug's local trial; the mirror is incremental, so a running job's trial can be followed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from inventory_pipeline.aws import s3_paths

log = logging.getLogger(__name__)

END_OF_JOB = "training_job_end.ts"  # smdebug's marker: the hook closed, no more steps will come


@dataclass(frozen=True)
class StoredObject:
    key: str  # relative to the storage root, "/"-separated
    size: int
    version: str  # changes when the object changes (mtime+size locally, ETag on S3)


class Storage(Protocol):
    uri: str

    def list(self, prefix: str = "") -> list[StoredObject]: ...

    def read(self, key: str) -> bytes: ...

    def read_head(self, key: str, size: int) -> bytes: ...

    def write(self, key: str, data: bytes) -> None: ...

    def download(self, key: str, target: Path) -> None: ...


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, prefix without surrounding slashes); the prefix may be empty."""
    bucket, prefix = s3_paths.split_s3_uri(uri, require_key=False)
    return bucket, prefix.strip("/")


class LocalStorage:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.uri = str(self.root)

    def list(self, prefix: str = "") -> list[StoredObject]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return []
        objects = []
        for path in base.rglob("*"):
            if path.is_file():
                stat = path.stat()
                key = path.relative_to(self.root).as_posix()
                objects.append(StoredObject(key, stat.st_size, f"{stat.st_mtime_ns}-{stat.st_size}"))
        return sorted(objects, key=lambda o: o.key)

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def read_head(self, key: str, size: int) -> bytes:
        with open(self.root / key, "rb") as handle:
            return handle.read(size)

    def write(self, key: str, data: bytes) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)  # readers never see half a report

    def download(self, key: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.read(key))


class S3Storage:
    def __init__(self, client: Any, uri: str):
        self.client = client
        self.bucket, self.prefix = split_s3_uri(uri)
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def list(self, prefix: str = "") -> list[StoredObject]:
        full = self._key(prefix).rstrip("/") + "/" if (self.prefix or prefix) else ""
        cut = len(self.prefix) + 1 if self.prefix else 0
        objects = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                objects.append(StoredObject(obj["Key"][cut:], int(obj["Size"]), str(obj.get("ETag", ""))))
        return sorted(objects, key=lambda o: o.key)

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def read_head(self, key: str, size: int) -> bytes:
        answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range=f"bytes=0-{size - 1}")
        return answer["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def download(self, key: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        self.client.download_file(self.bucket, self._key(key), str(tmp))
        os.replace(tmp, target)


def s3_client(endpoint_url: str | None = None) -> Any:
    """A client with the project's retry policy; credentials and region from the usual boto3 chain."""
    from inventory_pipeline.aws.clients import make_client

    return make_client("s3", endpoint_url=endpoint_url or os.environ.get("INVENTORY_S3_ENDPOINT") or None)


def open_storage(location: str | Path, client: Any = None, endpoint_url: str | None = None) -> Storage:
    """`s3://bucket/prefix` or a local directory."""
    text = str(location)
    if text.startswith("s3://"):
        return S3Storage(client or s3_client(endpoint_url), text)
    return LocalStorage(text)


def _mirror_order(key: str) -> tuple[int, str]:
    # smdebug reads an index file's tensors out of the event file it names, and takes the end-of-job marker
    # to mean "everything is written": copy event files first, index files after them, the marker last.
    if key == END_OF_JOB:
        return (3, key)
    if key.startswith("index/"):
        return (2, key)
    if key.startswith("collections/"):
        return (1, key)
    return (0, key)


def mirror(source: Storage, target: Path, seen: dict[str, str] | None = None) -> int:
    """Copy what is new or changed under `source` into `target`; returns how many files were copied.
    Pass the same `seen` dict on every call to follow a source that is still being written."""
    seen = {} if seen is None else seen
    if isinstance(source, LocalStorage) and source.root.resolve() == Path(target).resolve():
        return 0
    fresh = [o for o in source.list() if seen.get(o.key) != o.version]
    for obj in sorted(fresh, key=lambda o: _mirror_order(o.key)):
        source.download(obj.key, Path(target) / obj.key)
        seen[obj.key] = obj.version
    if fresh:
        log.debug("mirrored %d file(s) from %s", len(fresh), source.uri)
    return len(fresh)


def upload_tree(directory: Path, target: Storage) -> int:
    """Every file under `directory` to the same relative keys under `target`."""
    count = 0
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file():
            target.write(path.relative_to(directory).as_posix(), path.read_bytes())
            count += 1
    return count
