"""CheckpointConfig as SageMaker runs it: the job's LocalPath is synced to S3Uri while it trains, and a job
(re)starting with checkpoints under S3Uri finds them restored in LocalPath before the entry point runs.

Managed Spot interruptions rely on it: the replacement instance restores what the interrupted one synced.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from inventory_pipeline.local_aws.runner.workspace import split_s3_uri

log = logging.getLogger(__name__)
# A checkpoint being written (train.py writes `<name>.tmp`, then renames): never synced, so a restart can
# only restore a complete file.
_PARTIAL_SUFFIX = ".tmp"


class CheckpointSync:
    """One job's checkpoints: every host's local directory <-> the job's CheckpointConfig.S3Uri."""

    def __init__(self, s3: Any, s3_uri: str, local_dirs: list[Path]):
        self.s3, self.local_dirs = s3, local_dirs
        self.bucket, prefix = split_s3_uri(s3_uri)
        self.prefix = prefix.rstrip("/")
        self._synced: dict[Path, tuple[int, int]] = {}

    def restore(self) -> int:
        """Empty each host's directory, then copy every checkpoint under S3Uri into it (a fresh instance)."""
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/"):
            keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
        for directory in self.local_dirs:
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True, exist_ok=True)
            for key in keys:
                target = (directory / key[len(self.prefix) + 1 :]).resolve()
                if directory.resolve() not in target.parents:
                    log.warning("checkpoint key %s would land outside %s: skipped", key, directory)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(self.bucket, key, str(target))
                self._synced[target] = _signature(target)
        if keys:
            log.info("restored %d checkpoint file(s) from s3://%s/%s", len(keys), self.bucket, self.prefix)
        return len(keys)

    def sync(self) -> int:
        """Upload what changed since the last sync; returns how many files went up."""
        uploaded = 0
        for directory in self.local_dirs:
            if not directory.is_dir():
                continue
            for path in sorted(directory.rglob("*")):
                if not path.is_file() or path.name.endswith(_PARTIAL_SUFFIX):
                    continue
                try:
                    signature = _signature(path)
                except FileNotFoundError:  # renamed away between the listing and now
                    continue
                if self._synced.get(path.resolve()) == signature:
                    continue
                key = f"{self.prefix}/{path.relative_to(directory).as_posix()}"
                self.s3.upload_file(str(path), self.bucket, key)
                self._synced[path.resolve()] = signature
                uploaded += 1
        return uploaded


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns
