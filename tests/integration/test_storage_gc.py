"""`storage gc` against the local stack: old versions, staging, orphan packs and old debug tensors go; what the
champion and the registered models need, the latest and the newest versions stay; a dry run deletes nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inventory_pipeline.dataset.stages import build_dataset
from inventory_pipeline.settings import Settings
from inventory_pipeline.storage.gc import GcRefused, collect, protected_versions, versions_in_channels
from inventory_pipeline.training.request import build_training_request

pytestmark = pytest.mark.integration
LATER = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)  # everything written now is past grace and expiry


def keys(s3, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def upload(s3, bucket: str, sample: Path) -> dict[str, int]:
    s3.create_bucket(Bucket=bucket)
    labels = {}
    for meta in sorted((sample / "metadata").glob("*.json")):
        labels[meta.stem] = json.loads(meta.read_text())["EXPECTED_QUANTITY"]
        s3.put_object(Bucket=bucket, Key=f"metadata/{meta.stem}.json", Body=meta.read_bytes())
        s3.put_object(
            Bucket=bucket,
            Key=f"bin-images/{meta.stem}.jpg",
            Body=(sample / "bin-images" / f"{meta.stem}.jpg").read_bytes(),
        )
    return labels


def job_channels(settings: Settings, job: str, manifest: dict) -> dict:
    """What DescribeTrainingJob echoes of the request the DAG sent for `manifest`'s channels."""
    return build_training_request(settings, job, manifest["channels"], "s3://b/code/sourcedir.tar.gz")


@pytest.fixture()
def project(s3, bucket_name, abid_sample, tmp_path):
    """Three dataset versions (60 photos, all 100, then one label corrected), a champion trained on the first
    (named by its job only), a registered model's decision naming the second, three jobs' debug tensors and
    one orphan pack."""
    source, dest = f"{bucket_name}-src", f"{bucket_name}-dst"
    s3.create_bucket(Bucket=dest)
    labels = upload(s3, source, abid_sample)
    versions, describes = [], {}
    for n, chosen in enumerate((sorted(labels)[:60], sorted(labels), sorted(labels))):
        if n == 2:  # a corrected label: a new version, no photo copied
            victim = sorted(labels)[0]
            meta = json.loads((abid_sample / "metadata" / f"{victim}.json").read_text())
            labels[victim] = 1 + labels[victim] % 5
            s3.put_object(
                Bucket=source,
                Key=f"metadata/{victim}.json",
                Body=json.dumps({**meta, "EXPECTED_QUANTITY": labels[victim]}).encode(),
            )
        file_list = tmp_path / f"fl{n}.json"
        file_list.write_text(
            json.dumps({str(k): [f"metadata/{i}.json" for i in chosen if labels[i] == k] for k in range(1, 6)})
        )
        settings = Settings(
            source_bucket=source,
            bucket=dest,
            prefix="proj",
            file_list=str(file_list),
            copy_workers=8,
            allow_local_file_list=True,
        )
        manifest = build_dataset(s3, settings)
        versions.append(manifest["version"])
        describes[f"job-{n}"] = job_channels(settings, f"job-{n}", manifest)
    s3.put_object(Bucket=dest, Key="proj/models/champion/metrics.json", Body=json.dumps({"job": "job-0"}).encode())
    s3.put_object(Bucket=dest, Key="proj/models/history.jsonl", Body=b'{"job": "job-0", "promoted": true}\n')
    for job, status in (("job-x", "not_better"), ("job-y", "failed")):  # a registered model, and no model
        record = {"job": job, "status": status, "lineage": {"dataset_version": versions[1]}}
        s3.put_object(Bucket=dest, Key=f"proj/models/decisions/{job}/decision.json", Body=json.dumps(record).encode())
    for job in ("job-0", "job-1", "job-2"):  # job-2's tensors are the newest
        time.sleep(1.1 if job == "job-2" else 0)  # S3's LastModified has a resolution of one second
        s3.put_object(Bucket=dest, Key=f"proj/training-jobs/{job}/debug-output/events/000.tfevents", Body=b"t")
        s3.put_object(Bucket=dest, Key=f"proj/training-jobs/{job}/output/model.tar.gz", Body=b"m")
    s3.put_object(Bucket=dest, Key="proj/raw/packs/train/0000orphan000000.tar", Body=b"killed run")
    return dest, versions, lambda job: versions_in_channels(describes[job]) if job in describes else None


def test_protected_versions_follow_the_champion_and_history_through_their_jobs(s3, project):
    dest, versions, job_versions = project
    protected = protected_versions(s3, dest, "proj/", job_versions)
    assert protected == {versions[0]: ["champion", "history: job-0"], versions[1]: ["registered (not_better): job-x"]}
    s3.put_object(Bucket=dest, Key="proj/models/history.jsonl", Body=b'{"job": "job-unknown"}\n')
    with pytest.raises(GcRefused, match="job-unknown"):
        collect(s3, dest, "proj/", 1, job_versions=job_versions, now=LATER)


def test_dry_run_deletes_nothing_and_the_real_run_deletes_exactly_its_plan(s3, project):
    dest, (v0, v1, v2), job_versions = project
    before = keys(s3, dest)
    plan = collect(s3, dest, "proj/", 1, dry_run=True, job_versions=job_versions, now=LATER)
    assert keys(s3, dest) == before  # nothing deleted
    assert plan.kept_versions == sorted([v0, v1, v2]) and plan.deleted_versions == []  # all needed: 0, 1 protected
    assert plan.deleted["packs"] == 1 and plan.deleted_debug_jobs == ["job-1"]  # champion's and newest stay
    # each kept version's published record and the documents it names stay; the source listings' records
    # (a re-run's shortcut for an hour, dataset/source_check.py) expire with the other staging documents
    expired = [k for k in plan.keys if "/staging/" in k]
    assert expired and all(k.startswith("proj/staging/source-checks/") for k in expired)
    assert plan.deleted["staging"] == len(expired)

    s3.delete_object(Bucket=dest, Key="proj/models/decisions/job-x/decision.json")  # v1: only a failed run's now
    before = keys(s3, dest)
    plan = collect(s3, dest, "proj/", 1, dry_run=True, job_versions=job_versions, now=LATER)
    assert plan.deleted_versions == [v1] and set(plan.kept_versions) == {v0, v2}
    staging = [k for k in plan.keys if "/staging/" in k and "/staging/source-checks/" not in k]
    assert plan.deleted["datasets"] == 7 and len(staging) == 3  # its record, selection and copy
    done = collect(s3, dest, "proj/", 1, job_versions=job_versions, now=LATER)
    assert done.to_dict() == {**plan.to_dict(), "dry_run": False}
    after = keys(s3, dest)
    assert sorted(set(before) - set(after)) == sorted(done.keys)
    assert not [k for k in after if f"/datasets/{v1}/" in k or "orphan" in k or "job-1/debug-output" in k]
    assert "proj/training-jobs/job-1/output/model.tar.gz" in after  # only debug tensors of old jobs go
    for version in (v0, v2):
        assert f"proj/datasets/{version}/manifest.json" in after
    indexed = {
        e["pack"]
        for k in keys(s3, dest, "proj/raw/index/")
        for e in json.loads(s3.get_object(Bucket=dest, Key=k)["Body"].read())["entries"].values()
    }
    assert {f"proj/{p}" for p in indexed} == set(keys(s3, dest, "proj/raw/packs/"))  # every photo still there
    assert collect(s3, dest, "proj/", 1, job_versions=job_versions, now=LATER).keys == []  # nothing left to do


def test_cli_dry_run_prints_the_plan_as_json(local_stack, s3, project):
    dest, _, _ = project
    exe = str(Path(sys.executable).with_name("inventory-pipeline"))
    before = keys(s3, dest)
    s3.put_object(Bucket=dest, Key="proj/models/history.jsonl", Body=b"")
    s3.delete_object(Bucket=dest, Key="proj/models/champion/metrics.json")
    s3.delete_object(Bucket=dest, Key="proj/models/decisions/job-x/decision.json")
    done = subprocess.run(
        [
            exe,
            "storage",
            "gc",
            "--keep-versions",
            "1",
            "--dry-run",
            "--bucket",
            dest,
            "--prefix",
            "proj",
            "--grace-hours",
            "0",
            "--json",
        ],
        env={**os.environ, **local_stack.env()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["dry_run"] and len(result["deleted_versions"]) == 2 and result["deleted"]["packs"] == 1
    assert set(keys(s3, dest)) == set(before) - {
        "proj/models/champion/metrics.json",
        "proj/models/decisions/job-x/decision.json",
    }
