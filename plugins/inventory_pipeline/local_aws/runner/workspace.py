"""The job's `/opt/ml`-like directories, the source code (extracted safely) and the input channels."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inventory_pipeline.aws import s3_paths

log = logging.getLogger(__name__)


class WorkspaceError(Exception):
    """The job's inputs cannot be prepared; the message becomes its FailureReason."""


@dataclass(frozen=True)
class HostDirs:
    """One host's /opt/ml."""

    root: Path

    @property
    def input_config(self) -> Path:
        return self.root / "input" / "config"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def output_data(self) -> Path:
        return self.root / "output" / "data"

    @property
    def tensors(self) -> Path:
        return self.root / "output" / "tensors"

    def create(self) -> HostDirs:
        for path in (self.input_config, self.model, self.output_data):
            path.mkdir(parents=True, exist_ok=True)
        return self


def split_s3_uri(uri: str) -> tuple[str, str]:
    try:
        return s3_paths.split_s3_uri(uri, require_key=False)
    except ValueError as exc:
        raise WorkspaceError(str(exc)) from exc


def extract_sourcedir(s3: Any, uri: str, dest: Path) -> None:
    """Download and extract sourcedir.tar.gz; absolute paths, `..` and links leading out are refused."""
    bucket, key = split_s3_uri(uri)
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:
        raise WorkspaceError(f"cannot download the source code {uri}: {exc}") from exc
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise WorkspaceError(f"refused to extract {uri}: {exc}") from exc


def manifest_objects(s3: Any, name: str, uri: str) -> tuple[str, list[tuple[str, str]]]:
    """A ManifestFile channel's objects as SageMaker reads them: (bucket, [(key, path relative to the channel)]).

    The manifest is a JSON list whose first element is {"prefix": "s3://bucket/some/prefix/"} and whose other
    elements are keys relative to that prefix; SageMaker appends each to the prefix, and in File mode places the
    object at `<channel dir>/<relative key>`. One prefix means one bucket; an empty manifest fails the job.
    """
    bucket, key = split_s3_uri(uri)
    try:
        document = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ValueError as exc:
        raise WorkspaceError(f"ClientError: channel {name!r}: the manifest {uri} is not JSON: {exc}") from exc
    except Exception as exc:
        raise WorkspaceError(f"ClientError: channel {name!r}: cannot read the manifest {uri}: {exc}") from exc
    head = document[0] if isinstance(document, list) and document else None
    prefix = head.get("prefix") if isinstance(head, dict) else None
    if not isinstance(prefix, str) or not prefix.startswith("s3://") or len(prefix) <= len("s3://"):
        raise WorkspaceError(
            f"ClientError: channel {name!r}: the manifest {uri} must be a JSON list starting with "
            '{"prefix": "s3://bucket/prefix/"}'
        )
    relative = document[1:]
    if not relative or not all(isinstance(r, str) and r for r in relative):
        raise WorkspaceError(f"ClientError: channel {name!r}: the manifest {uri} lists no object keys (strings)")
    prefix_bucket, prefix_key = split_s3_uri(prefix)
    return prefix_bucket, [(prefix_key + r, r) for r in relative]


def download_channel(s3: Any, name: str, uri: str, dest: Path, workers: int = 16, data_type: str = "S3Prefix") -> int:
    """The channel's objects at their paths under `dest`: every object under an S3Prefix, at its path relative to
    the prefix (as SageMaker: `s3://b/in/code` and `s3://b/in/code/` both put `in/code/x.py` at `<channel>/x.py`;
    a prefix that is one object's whole key puts that object at `<channel>/<its name>`), or each object a
    ManifestFile lists (at its key relative to the manifest's prefix)."""
    if data_type == "ManifestFile":
        bucket, objects = manifest_objects(s3, name, uri)
    elif data_type == "S3Prefix":
        bucket, prefix = split_s3_uri(uri)
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
        if not keys:
            raise WorkspaceError(f"channel {name!r}: no objects under {uri}")
        objects = [(key, key[len(prefix) :].lstrip("/") or key.rsplit("/", 1)[-1]) for key in keys]
    else:
        raise WorkspaceError(f"ClientError: channel {name!r}: S3DataType {data_type} is not supported in File mode")
    dest = dest.resolve()

    def fetch(job: tuple[str, str]) -> None:
        key, relative = job
        target = (dest / relative).resolve()
        if dest not in target.parents:
            raise WorkspaceError(f"channel {name!r}: key {key!r} would land outside the channel directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        # One GET per object (download_file would HEAD each object first: twice the requests).
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        except Exception as exc:
            raise WorkspaceError(f"ClientError: channel {name!r}: cannot read s3://{bucket}/{key}: {exc}") from exc
        with open(target, "wb") as out:
            for chunk in body.iter_chunks(1 << 20):
                out.write(chunk)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(fetch, objects))
    return len(objects)


def write_configs(host: HostDirs, job: dict[str, Any], current: str, hosts: list[str]) -> None:
    """hyperparameters.json, resourceconfig.json, inputdataconfig.json as SageMaker writes them."""
    host.create()
    (host.input_config / "hyperparameters.json").write_text(json.dumps(job.get("HyperParameters", {})))
    instance_type = job.get("ResourceConfig", {}).get("InstanceType", "")
    group = {"instance_group_name": "homogeneousCluster", "instance_type": instance_type, "hosts": hosts}
    (host.input_config / "resourceconfig.json").write_text(
        json.dumps(
            {
                "current_host": current,
                "current_instance_type": instance_type,
                "current_group_name": "homogeneousCluster",
                "hosts": hosts,
                "instance_groups": [group],
                "network_interface_name": "lo",
            }
        )
    )
    channels = {
        c["ChannelName"]: {
            "TrainingInputMode": c.get("InputMode", "File"),
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        }
        for c in job.get("InputDataConfig", [])
    }
    (host.input_config / "inputdataconfig.json").write_text(json.dumps(channels))
    hook = job.get("DebugHookConfig")
    if hook:
        config = {
            "LocalPath": str(host.tensors),
            "S3OutputPath": hook.get("S3OutputPath"),
            "HookParameters": hook.get("HookParameters", {}),
            "CollectionConfigurations": hook.get("CollectionConfigurations", []),
        }
        (host.input_config / "debughookconfig.json").write_text(json.dumps(config))
