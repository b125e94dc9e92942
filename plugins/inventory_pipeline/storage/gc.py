"""Bounded storage: remove old dataset versions, staging leftovers, orphan packs and old jobs' debug tensors.

What is never removed:
- a dataset version the champion or any model in the registry's history needs (`protected_versions`: today
  `models/champion/metrics.json` and `models/history.jsonl`; a record's `dataset_version` when it has one, else
  the version its training job's channels name), the version `datasets/latest.json` names, and the
  `keep_versions` newest complete versions;
- the raw area's indexed packs (the one copy of each photo) and index documents;
- anything younger than `grace_hours` that a run in progress may still be writing (a version without its
  manifest yet, a pack not yet indexed);
- the debug tensors of the champion's job and of the `keep_versions` newest jobs.
A record whose job cannot be mapped to a dataset stops the gc (GcRefused) before anything is deleted: when in
doubt, keep. `dry_run` plans the same deletions and deletes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from inventory_pipeline.dataset import s3io
from inventory_pipeline.dataset.errors import DatasetError

log = logging.getLogger(__name__)
_VERSION_IN_URI = re.compile(r"/datasets/([0-9a-f]{16})/")
DEFAULT_GRACE_HOURS = 24.0
DEFAULT_STAGING_DAYS = 7.0


class GcRefused(Exception):
    """The gc cannot tell what a protected model needs: nothing was deleted."""


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    modified: dt.datetime


@dataclass
class GcReport:
    dry_run: bool
    keep_versions: int
    protected: dict[str, list[str]] = field(default_factory=dict)
    kept_versions: list[str] = field(default_factory=list)
    deleted_versions: list[str] = field(default_factory=list)
    incomplete_versions: list[str] = field(default_factory=list)
    deleted_debug_jobs: list[str] = field(default_factory=list)
    deleted: dict[str, int] = field(
        default_factory=lambda: {"datasets": 0, "staging": 0, "packs": 0, "debug_tensors": 0}
    )
    keys: list[str] = field(default_factory=list)
    bytes: int = 0

    def add(self, kind: str, objects: Iterable[Listed]) -> None:
        for obj in objects:
            self.deleted[kind] += 1
            self.keys.append(obj.key)
            self.bytes += obj.size

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "keep_versions": self.keep_versions,
            "protected": self.protected,
            "kept_versions": self.kept_versions,
            "deleted_versions": self.deleted_versions,
            "incomplete_versions": self.incomplete_versions,
            "deleted_debug_jobs": self.deleted_debug_jobs,
            "deleted": self.deleted,
            "objects": len(self.keys),
            "bytes": self.bytes,
        }


def _list(s3: Any, bucket: str, prefix: str) -> list[Listed]:
    found = []
    with s3io.explained(bucket, f"listing {prefix}"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found += [Listed(o["Key"], o["Size"], o["LastModified"]) for o in page.get("Contents", [])]
    return found


def _read_json(s3: Any, bucket: str, key: str) -> Any:
    try:
        return s3io.read_json(s3, bucket, key)
    except Exception as exc:
        if s3io.is_missing(exc):
            return None
        raise


def _history(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    try:
        text = s3io.get_bytes(s3, bucket, key).decode()
    except Exception as exc:
        if s3io.is_missing(exc):
            return []
        raise
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def versions_in_channels(describe: dict[str, Any]) -> set[str]:
    """The dataset versions a training job's channels name (S3Prefix or ManifestFile, old and new layouts)."""
    found = set()
    for channel in describe.get("InputDataConfig", []):
        uri = channel.get("DataSource", {}).get("S3DataSource", {}).get("S3Uri", "")
        found.update(_VERSION_IN_URI.findall(uri))
    return found


def sagemaker_job_versions(sagemaker: Any) -> Callable[[str], set[str] | None]:
    """job name -> the dataset versions its channels name (None when the job cannot be described)."""

    def versions(job: str) -> set[str] | None:
        try:
            return versions_in_channels(sagemaker.describe_training_job(TrainingJobName=job))
        except Exception as exc:
            log.warning("cannot describe training job %s: %s", job, exc)
            return None

    return versions


def protected_versions(
    s3: Any, bucket: str, root: str, job_versions: Callable[[str], set[str] | None] | None = None
) -> dict[str, list[str]]:
    """version -> why it must stay: every dataset the champion and the registered models were trained on.

    Read from the project bucket: `models/champion/metrics.json`, every decision record under
    `models/decisions/` whose model was registered (REGISTERED_STATUSES: its `lineage.dataset_version`), and
    the older `models/history.jsonl`. Extend it with the registry's own versions (their `dataset_version` tag)
    where the bucket no longer tells. A record without a dataset version is mapped through its job's channels
    (`job_versions`); one that cannot be mapped raises GcRefused.
    """
    from inventory_pipeline.decision.apply import REGISTERED_STATUSES

    models = f"{root}models/"
    records: list[tuple[str, dict[str, Any]]] = []
    champion = _read_json(s3, bucket, f"{models}champion/metrics.json")
    if isinstance(champion, dict):
        records.append(("champion", champion))
    for obj in _list(s3, bucket, f"{models}decisions/"):
        if obj.key.endswith("/decision.json"):
            record = _read_json(s3, bucket, obj.key)
            if isinstance(record, dict) and record.get("status") in REGISTERED_STATUSES:
                records.append((f"registered ({record['status']}): {record.get('job', '?')}", record))
    records += [(f"history: {r.get('job', '?')}", r) for r in _history(s3, bucket, f"{models}history.jsonl")]
    protected: dict[str, list[str]] = {}
    for reason, record in records:
        version = record.get("dataset_version") or (record.get("lineage") or {}).get("dataset_version")
        versions = {version} if version else None
        if versions is None and record.get("job") and job_versions is not None:
            versions = job_versions(str(record["job"]))
        if not versions:
            raise GcRefused(
                f"cannot tell which dataset version {reason} was trained on (no dataset_version, and its job "
                f"{record.get('job')!r} names none): nothing deleted"
            )
        for version in versions:
            protected.setdefault(version, []).append(reason)
    return protected


def _champion_job(s3: Any, bucket: str, root: str) -> str | None:
    champion = _read_json(s3, bucket, f"{root}models/champion/metrics.json")
    return champion.get("job") if isinstance(champion, dict) else None


def _delete(s3: Any, bucket: str, keys: list[str]) -> None:
    with s3io.explained(bucket, "deleting"):
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            response = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            if response.get("Errors"):
                raise DatasetError(
                    f"S3 refused to delete {len(response['Errors'])} object(s): {response['Errors'][:3]}"
                )


def collect(
    s3: Any,
    bucket: str,
    root: str,
    keep_versions: int,
    dry_run: bool = False,
    job_versions: Callable[[str], set[str] | None] | None = None,
    grace_hours: float = DEFAULT_GRACE_HOURS,
    staging_days: float = DEFAULT_STAGING_DAYS,
    now: dt.datetime | None = None,
) -> GcReport:
    """Plan what storage to free (see the module's rules) and, unless `dry_run`, delete it."""
    if keep_versions < 1:
        raise ValueError("keep_versions must be at least 1")
    now = now or dt.datetime.now(dt.UTC)
    grace = now - dt.timedelta(hours=grace_hours)
    report = GcReport(dry_run=dry_run, keep_versions=keep_versions)
    report.protected = protected_versions(s3, bucket, root, job_versions)

    # Dataset versions.
    datasets = f"{root}datasets/"
    by_version: dict[str, list[Listed]] = {}
    for obj in _list(s3, bucket, datasets):
        version, _, rest = obj.key[len(datasets) :].partition("/")
        if rest:
            by_version.setdefault(version, []).append(obj)
    latest = _read_json(s3, bucket, f"{datasets}latest.json") or {}
    complete = {
        v: next(o.modified for o in objs if o.key.endswith("/manifest.json"))
        for v, objs in by_version.items()
        if any(o.key == f"{datasets}{v}/manifest.json" for o in objs)
    }
    newest = sorted(complete, key=lambda v: complete[v], reverse=True)[:keep_versions]
    keep = set(newest) | set(report.protected) | ({latest["version"]} if latest.get("version") else set())
    for version, objects in sorted(by_version.items()):
        if version in keep:
            report.kept_versions.append(version)
        elif version in complete:
            report.deleted_versions.append(version)
            report.add("datasets", objects)
        elif max(o.modified for o in objects) < grace:  # never finished, and nobody is writing it any more
            report.incomplete_versions.append(version)
            report.add("datasets", objects)
        else:
            report.kept_versions.append(version)  # being written now

    # Staging: a kept version's published record (a re-run's shortcut) and the documents it names stay; a
    # record of a removed version goes; other documents expire after `staging_days` (a run reads them minutes
    # after writing them).
    staging = f"{root}staging/"
    staged = _list(s3, bucket, staging)
    needed: set[str] = set()
    stale: list[Listed] = []
    for obj in staged:
        if obj.key.startswith(f"{staging}published/"):
            record = _read_json(s3, bucket, obj.key)
            if isinstance(record, dict) and record.get("version") in keep:
                needed |= {obj.key, str(record.get("selection_key")), str(record.get("copy_key"))}
            else:
                stale.append(obj)
    expired_before = now - dt.timedelta(days=staging_days)
    gone = {o.key for o in stale}
    stale += [o for o in staged if o.key not in needed | gone and o.modified < expired_before]
    report.add("staging", stale)

    # Packs no index names: leftovers of a run killed before it recorded them.
    indexed: set[str] = set()
    for obj in _list(s3, bucket, f"{root}raw/index/"):
        document = _read_json(s3, bucket, obj.key)
        if isinstance(document, dict):
            indexed |= {f"{root}{e['pack']}" for e in document.get("entries", {}).values() if "pack" in e}
    report.add(
        "packs", [o for o in _list(s3, bucket, f"{root}raw/packs/") if o.key not in indexed and o.modified < grace]
    )

    # Debug tensors of old jobs.
    jobs_prefix = f"{root}training-jobs/"
    debug: dict[str, list[Listed]] = {}
    for obj in _list(s3, bucket, jobs_prefix):
        job, _, rest = obj.key[len(jobs_prefix) :].partition("/")
        if rest.startswith("debug-output/"):
            debug.setdefault(job, []).append(obj)
    recent = sorted(debug, key=lambda j: (max(o.modified for o in debug[j]), j), reverse=True)[:keep_versions]
    spared = set(recent) | {_champion_job(s3, bucket, root)}
    for job in sorted(set(debug) - spared):
        report.deleted_debug_jobs.append(job)
        report.add("debug_tensors", debug[job])

    log.info(
        "storage gc%s: %d objects (%d bytes): %s; kept versions %s",
        " (dry run)" if dry_run else "",
        len(report.keys),
        report.bytes,
        report.deleted,
        report.kept_versions,
    )
    if not dry_run:
        _delete(s3, bucket, report.keys)
    return report
