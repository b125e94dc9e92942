"""The data plane against the local stack (moto's S3 server), on the real ABID sample photos and bad input."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from inventory_pipeline.dataset import errors
from inventory_pipeline.dataset.stages import build_dataset
from inventory_pipeline.settings import Settings

pytestmark = pytest.mark.integration


def upload_sample(s3, bucket: str, sample: Path, ids: list[str] | None = None) -> dict[str, int]:
    """The real photos + metadata in the public bucket's layout; returns {id: label}."""
    s3.create_bucket(Bucket=bucket)
    labels = {}
    for meta in sorted((sample / "metadata").glob("*.json")):
        image_id = meta.stem
        if ids is not None and image_id not in ids:
            continue
        labels[image_id] = json.loads(meta.read_text())["EXPECTED_QUANTITY"]
        s3.put_object(Bucket=bucket, Key=f"metadata/{image_id}.json", Body=meta.read_bytes())
        s3.put_object(
            Bucket=bucket,
            Key=f"bin-images/{image_id}.jpg",
            Body=(sample / "bin-images" / f"{image_id}.jpg").read_bytes(),
        )
    return labels


def file_list_for(labels: dict[str, int]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {str(k): [] for k in range(1, 6)}
    for image_id, label in sorted(labels.items()):
        out[str(label)].append(f"metadata/{image_id}.json")
    return out


def settings_for(source: str, dest: str, **overrides) -> Settings:
    # the test's own file lists on this machine's disk, as the embedded stack allows
    return Settings(
        **{
            "source_bucket": source,
            "bucket": dest,
            "prefix": "proj",
            "copy_workers": 8,
            "allow_local_file_list": True,
            **overrides,
        }
    )


def keys(s3, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.fixture()
def buckets(s3, bucket_name):
    source, dest = f"{bucket_name}-src", f"{bucket_name}-dst"
    s3.create_bucket(Bucket=dest)
    return source, dest


def test_real_photos_by_file_list_then_rerun_is_free(s3, buckets, abid_sample, tmp_path):
    source, dest = buckets
    labels = upload_sample(s3, source, abid_sample)
    file_list = tmp_path / "file_list.json"
    file_list.write_text(json.dumps(file_list_for(labels)))

    first = build_dataset(s3, settings_for(source, dest, file_list=str(file_list)))
    assert first["rejected"] == [] and first["copied"] == 100  # each photo stored once, in a pack
    counts = first["counts"]
    assert sum(n for split in counts.values() for n in split.values()) == 100
    per_class = Counter()
    for split in counts.values():
        per_class.update({int(k): v for k, v in split.items()})
    assert per_class == {1: 20, 2: 20, 3: 20, 4: 20, 5: 20}

    manifest = json.loads(s3.get_object(Bucket=dest, Key=first["manifest_key"])["Body"].read())
    assert len(manifest["entries"]) == 100
    photos = {p.stem: p.read_bytes() for p in (abid_sample / "bin-images").glob("*.jpg")}
    packs = {}
    for entry in manifest["entries"]:
        assert entry["pack"].startswith(f"raw/packs/{entry['split']}/") and entry["pack"].endswith(".tar")
        assert labels[entry["image_id"]] == entry["label"]
        if entry["pack"] not in packs:
            packs[entry["pack"]] = s3.get_object(Bucket=dest, Key=f"proj/{entry['pack']}")["Body"].read()
        stored = packs[entry["pack"]][entry["offset"] : entry["offset"] + entry["size"]]
        assert stored == photos[entry["image_id"]]  # the validated photo's exact bytes, once
    assert sorted(keys(s3, dest, "proj/raw/packs/")) == sorted(f"proj/{p}" for p in packs)
    published = keys(s3, dest, f"proj/datasets/{first['version']}/")
    assert len(published) == 7  # per split labels.json + a ManifestFile, then the manifest: no photo copied
    assert first["channels"]["train"] == f"s3://{dest}/proj/datasets/{first['version']}/train.manifest"
    train_key = f"proj/datasets/{first['version']}/train.manifest"
    train = json.loads(s3.get_object(Bucket=dest, Key=train_key)["Body"].read())
    assert train[0] == {"prefix": f"s3://{dest}/proj/"}
    assert set(train[2:]) == {p for p in packs if "/train/" in p}

    again = build_dataset(s3, settings_for(source, dest, file_list=str(file_list)))
    assert again["version"] == first["version"]
    assert again["copied"] == 0 and again["skipped"] == 100


def test_rerun_of_a_published_selection_skips_the_raw_area_and_a_deleted_manifest_is_rebuilt(
    s3, buckets, abid_sample, tmp_path
):
    source, dest = buckets
    labels = upload_sample(s3, source, abid_sample)
    file_list = tmp_path / "file_list.json"
    file_list.write_text(json.dumps(file_list_for(labels)))
    settings = settings_for(source, dest, file_list=str(file_list))
    first = build_dataset(s3, settings)
    records = keys(s3, dest, "proj/staging/published/")
    assert len(records) == 1

    listed: list[str] = []
    s3.meta.events.register(
        "provide-client-params.s3.ListObjectsV2", lambda params, **_: listed.append(params["Prefix"])
    )
    again = build_dataset(s3, dataclasses.replace(settings, source_recheck_minutes=0))  # the source listed again
    assert (again["version"], again["copied"], again["new"]) == (first["version"], 0, 0)
    assert again["counts"] == first["counts"] and again["skipped"] == 100
    assert listed and not [p for p in listed if p.startswith("proj/")]  # only the source was listed

    s3.delete_object(Bucket=dest, Key=first["manifest_key"])  # the record no longer vouches for anything
    listed.clear()
    rebuilt = build_dataset(s3, settings)
    assert rebuilt["version"] == first["version"] and rebuilt["copied"] == 0  # the packs are still there
    assert s3.head_object(Bucket=dest, Key=first["manifest_key"])
    assert [p for p in listed if p.startswith("proj/raw/")]  # the long way: the raw index was read again


def test_a_rerun_soon_after_a_listing_reuses_it_unless_the_file_list_or_the_hour_changed(
    s3, buckets, abid_sample, tmp_path
):
    """source_check: an unchanged re-run within source_recheck_minutes lists nothing and reads a few small
    documents; a changed file list, an old listing or source_recheck_minutes=0 take the full path."""
    from inventory_pipeline.dataset import source_check
    from inventory_pipeline.dataset.stages import _source

    source, dest = buckets
    labels = upload_sample(s3, source, abid_sample)
    s3.put_object(Bucket=source, Key="file_list.json", Body=json.dumps(file_list_for(labels)).encode())
    settings = settings_for(source, dest, file_list=f"s3://{source}/file_list.json")
    first = build_dataset(s3, settings)
    requests: list[str] = []

    def count(model, **_):
        requests.append(model.name)

    s3.meta.events.register("before-call.s3", count)
    try:
        again = build_dataset(s3, settings)
        assert (again["version"], again["copied"], again["counts"]) == (first["version"], 0, first["counts"])
        assert "ListObjectsV2" not in requests and len(requests) <= 6, requests  # nothing listed, nothing copied
        assert again["manifest_key"] == first["manifest_key"]

        record_key = source_check.record_key(settings.root, _source(settings))
        record = json.loads(s3.get_object(Bucket=dest, Key=record_key)["Body"].read())
        now = dt.datetime.now(dt.UTC)
        for stale in (now - dt.timedelta(minutes=61), now + dt.timedelta(minutes=5)):
            s3.put_object(
                Bucket=dest, Key=record_key, Body=json.dumps({**record, "listed_at": stale.isoformat()}).encode()
            )
            requests.clear()
            build_dataset(s3, settings)
            assert "ListObjectsV2" in requests  # an old (or future) listing is not trusted: listed again
        requests.clear()
        build_dataset(s3, settings)
        assert "ListObjectsV2" not in requests  # that listing was recorded

        # A label moved to another class changes the file list: the shortcut is not taken.
        victim = sorted(labels)[0]
        corrected = 1 + labels[victim] % 5
        metadata = json.loads((abid_sample / "metadata" / f"{victim}.json").read_text())
        s3.put_object(
            Bucket=source,
            Key=f"metadata/{victim}.json",
            Body=json.dumps({**metadata, "EXPECTED_QUANTITY": corrected}).encode(),
        )
        s3.put_object(
            Bucket=source, Key="file_list.json", Body=json.dumps(file_list_for({**labels, victim: corrected})).encode()
        )
        requests.clear()
        changed = build_dataset(s3, settings)
        assert "ListObjectsV2" in requests and changed["version"] != first["version"]
    finally:
        s3.meta.events.unregister("before-call.s3", count)


def test_selection_by_listing_metadata_gives_the_same_dataset(s3, buckets, abid_sample, tmp_path):
    source, dest = buckets
    labels = upload_sample(s3, source, abid_sample, ids=None)
    s3.put_object(Bucket=source, Key="file_list.json", Body=json.dumps(file_list_for(labels)).encode())
    by_list = build_dataset(s3, settings_for(source, dest, file_list=f"s3://{source}/file_list.json"))
    by_listing = build_dataset(s3, settings_for(source, dest))
    assert by_listing["version"] == by_list["version"] and by_listing["copied"] == 0


def test_per_class_limit_too_small_for_every_split_is_refused_before_copying(s3, buckets, abid_sample):
    source, dest = buckets
    upload_sample(s3, source, abid_sample)
    with pytest.raises(errors.EmptySplit, match="5 images are too few: the training split needs every count"):
        build_dataset(s3, settings_for(source, dest, per_class_limit=1))
    assert keys(s3, dest, "proj/raw/") == [] and keys(s3, dest, "proj/datasets/") == []


def test_missing_source_bucket_is_a_clear_error(s3, buckets):
    _, dest = buckets
    with pytest.raises(errors.SourceNotFound, match="does not exist"):
        build_dataset(s3, settings_for("no-such-source-bucket", dest))


def test_no_credentials_is_a_clear_error(local_stack, buckets, monkeypatch, tmp_path):
    from inventory_pipeline.aws.clients import make_client

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    anonymous = make_client("s3", endpoint_url=local_stack.endpoints["s3"], region_name="us-east-1")
    with pytest.raises(errors.NoCredentials, match="no AWS credentials"):
        build_dataset(anonymous, settings_for("any-source", buckets[1]))


def test_empty_selection_is_refused(s3, buckets, tmp_path):
    source, dest = buckets
    s3.create_bucket(Bucket=source)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({str(k): [] for k in range(1, 6)}))
    with pytest.raises(errors.EmptySelection):
        build_dataset(s3, settings_for(source, dest, file_list=str(empty)))
    with pytest.raises(errors.EmptySelection):  # an empty bucket, by listing
        build_dataset(s3, settings_for(source, dest))


def _corrupt(s3, source: str, image_ids: list[str]) -> dict[str, str]:
    """One kind of bad input per id; returns {id: expected reason fragment}."""
    bad_metadata = [
        (b"{ not json", "not JSON"),
        (json.dumps({"BIN_FCSKU_DATA": {}}).encode(), "no EXPECTED_QUANTITY"),
        (json.dumps({"EXPECTED_QUANTITY": 9}).encode(), "outside 1-5"),
        (json.dumps({"EXPECTED_QUANTITY": "2"}).encode(), "not an integer"),
    ]
    expected = {}
    for image_id, (body, reason) in zip(image_ids[:4], bad_metadata, strict=True):
        s3.put_object(Bucket=source, Key=f"metadata/{image_id}.json", Body=body)
        expected[image_id] = reason
    s3.put_object(Bucket=source, Key=f"bin-images/{image_ids[4]}.jpg", Body=b"")
    expected[image_ids[4]] = "empty"
    s3.put_object(Bucket=source, Key=f"bin-images/{image_ids[5]}.jpg", Body=b"<html>not a photo</html>" * 100)
    expected[image_ids[5]] = "not a JPEG"
    s3.delete_object(Bucket=source, Key=f"bin-images/{image_ids[6]}.jpg")
    expected[image_ids[6]] = "missing in source"
    return expected


def test_bad_input_above_threshold_publishes_nothing(s3, buckets, abid_sample):
    source, dest = buckets
    labels = upload_sample(s3, source, abid_sample)
    _corrupt(s3, source, sorted(labels)[:7])
    s3.put_object(Bucket=source, Key="fl.json", Body=json.dumps(file_list_for(labels)).encode())
    with pytest.raises(errors.TooManyRejects) as info:
        build_dataset(s3, settings_for(source, dest, file_list=f"s3://{source}/fl.json"))
    assert len(info.value.rejects) == 7 and "7 of 100" in str(info.value)
    assert keys(s3, dest, "proj/raw/") == [] and keys(s3, dest, "proj/datasets/") == []


def test_bad_input_below_threshold_is_counted_and_reported(s3, buckets, abid_sample):
    source, dest = buckets
    labels = upload_sample(s3, source, abid_sample)
    expected = _corrupt(s3, source, sorted(labels)[:7])
    s3.put_object(Bucket=source, Key="fl.json", Body=json.dumps(file_list_for(labels)).encode())
    summary = build_dataset(s3, settings_for(source, dest, file_list=f"s3://{source}/fl.json", reject_threshold=0.1))
    reasons = {r["key"].rsplit("/", 1)[-1].split(".")[0]: r["reason"] for r in summary["rejected"]}
    assert set(reasons) == set(expected)
    for image_id, fragment in expected.items():
        assert fragment in reasons[image_id]
    assert sum(n for split in summary["counts"].values() for n in split.values()) == 93
    manifest = json.loads(s3.get_object(Bucket=dest, Key=summary["manifest_key"])["Body"].read())
    assert len(manifest["rejects"]) == 7


def test_label_mismatch_between_file_list_and_metadata_is_rejected(s3, buckets, abid_sample, tmp_path):
    source, dest = buckets
    labels = upload_sample(s3, source, abid_sample)
    wrong = dict(labels)
    victim = sorted(labels)[0]
    wrong[victim] = 1 + labels[victim] % 5
    listing = tmp_path / "fl.json"
    listing.write_text(json.dumps(file_list_for(wrong)))
    summary = build_dataset(s3, settings_for(source, dest, file_list=str(listing)))
    assert [r["reason"] for r in summary["rejected"]] == [
        f"EXPECTED_QUANTITY {labels[victim]} does not match the selected label {wrong[victim]}"
    ]


def test_throttling_is_retried(s3, buckets, abid_sample):
    """503 SlowDown answers are absorbed by botocore's retry config (aws_clients), not by our code.

    Once the parallel reads are under way (as S3 does when a burst exceeds a prefix's request rate), the
    first attempt of several image GETs is answered 503 SlowDown before it reaches the server;
    botocore marks its retries with `amz-sdk-request: attempt=N`.
    """
    from botocore.awsrequest import AWSResponse

    source, dest = buckets
    upload_sample(s3, source, abid_sample, ids=sorted(p.stem for p in (abid_sample / "metadata").glob("*.json"))[:20])
    first_attempts, throttled, retried = [], [], []

    class _Raw:
        def stream(self, **_):
            yield b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"

    def slow_down(request, **_):
        attempt = request.headers.get("amz-sdk-request", b"attempt=1")
        if (attempt.decode() if isinstance(attempt, bytes) else attempt) != "attempt=1":
            retried.append(request.url)
            return None
        if "/bin-images/" not in request.url:
            return None
        first_attempts.append(request.url)
        if 10 < len(first_attempts) <= 12:
            throttled.append(request.url)
            return AWSResponse(request.url, 503, {}, _Raw())
        return None

    s3.meta.events.register_first("before-send.s3", slow_down)
    try:
        summary = build_dataset(s3, settings_for(source, dest))
    finally:
        s3.meta.events.unregister("before-send.s3", slow_down)
    assert len(throttled) == 2 and set(retried) == set(throttled)
    assert sum(n for split in summary["counts"].values() for n in split.values()) == 20
    assert summary["rejected"] == []


def test_copy_killed_halfway_then_rerun_writes_the_same_packs_once(s3, buckets, abid_sample, monkeypatch):
    from inventory_pipeline.dataset import packs

    monkeypatch.setattr(packs, "PACK_IMAGES", 10)  # several packs from 100 photos
    source, dest = buckets
    upload_sample(s3, source, abid_sample)
    written: list[str] = []

    class Killed(Exception):
        pass

    def die_after_some_packs(params, **_):
        if "/raw/packs/" in params["Key"]:
            written.append(params["Key"])
            if len(written) > 4:
                raise Killed("worker killed mid-copy")

    s3.meta.events.register("before-parameter-build.s3.PutObject", die_after_some_packs)
    try:
        with pytest.raises(Killed):
            build_dataset(s3, settings_for(source, dest))
    finally:
        s3.meta.events.unregister("before-parameter-build.s3.PutObject", die_after_some_packs)
    assert keys(s3, dest, "proj/raw/") == [] and keys(s3, dest, "proj/datasets/") == []  # nothing half-recorded

    summary = build_dataset(s3, settings_for(source, dest))
    assert summary["raw"] == {"copied": 100, "skipped": 0}
    stored = keys(s3, dest, "proj/raw/packs/")
    assert set(written[:4]) <= set(stored)  # a pack's content is planned, not the order reads completed in
    manifest = json.loads(s3.get_object(Bucket=dest, Key=summary["manifest_key"])["Body"].read())
    assert sorted(stored) == sorted({f"proj/{e['pack']}" for e in manifest["entries"]})  # no leftovers
    assert len(keys(s3, dest, "proj/raw/index/")) == 1


def test_publish_killed_halfway_then_rerun_publishes_once(s3, buckets, abid_sample):
    source, dest = buckets
    upload_sample(s3, source, abid_sample)
    writes = {"n": 0}

    class Killed(Exception):
        pass

    def die_during_publish(params, **_):
        if "/datasets/" in params["Key"]:
            writes["n"] += 1
            if writes["n"] > 3:
                raise Killed("worker killed while publishing")

    s3.meta.events.register("before-parameter-build.s3.PutObject", die_during_publish)
    try:
        with pytest.raises(Killed):
            build_dataset(s3, settings_for(source, dest))
    finally:
        s3.meta.events.unregister("before-parameter-build.s3.PutObject", die_during_publish)
    partial = keys(s3, dest, "proj/datasets/")
    assert 0 < len(partial) < 7
    assert not any(k.endswith(("manifest.json", "latest.json")) for k in partial)  # nothing announced

    summary = build_dataset(s3, settings_for(source, dest))
    assert summary["raw"] == {"copied": 0, "skipped": 100}  # the photos were stored and indexed
    published = keys(s3, dest, f"proj/datasets/{summary['version']}/")
    assert len(published) == len(set(published)) == 7
    latest = json.loads(s3.get_object(Bucket=dest, Key="proj/datasets/latest.json")["Body"].read())
    assert latest["version"] == summary["version"] and latest["manifest_key"] == summary["manifest_key"]


def test_a_corrected_label_is_validated_again_and_never_copies_the_photo(s3, buckets, abid_sample, tmp_path):
    source, dest = buckets
    labels = upload_sample(s3, source, abid_sample)
    file_list = tmp_path / "fl.json"
    file_list.write_text(json.dumps(file_list_for(labels)))
    first = build_dataset(s3, settings_for(source, dest, file_list=str(file_list)))
    packs_before = keys(s3, dest, "proj/raw/packs/")

    victim = sorted(labels)[0]
    corrected = 1 + labels[victim] % 5
    metadata = json.loads((abid_sample / "metadata" / f"{victim}.json").read_text())
    s3.put_object(
        Bucket=source,
        Key=f"metadata/{victim}.json",
        Body=json.dumps({**metadata, "EXPECTED_QUANTITY": corrected}).encode(),
    )
    file_list.write_text(json.dumps(file_list_for({**labels, victim: corrected})))
    reads: list[str] = []

    def record(params, **_):
        reads.append(params["Key"])

    s3.meta.events.register("provide-client-params.s3.GetObject", record)
    try:
        second = build_dataset(s3, settings_for(source, dest, file_list=str(file_list)))
    finally:
        s3.meta.events.unregister("provide-client-params.s3.GetObject", record)
    assert second["version"] != first["version"] and second["copied"] == 0 and second["skipped"] == 100
    assert [k for k in reads if k.startswith(("bin-images/", "metadata/"))] == [f"metadata/{victim}.json"]
    assert keys(s3, dest, "proj/raw/packs/") == packs_before
    changes = second["changes"]
    assert changes["previous_version"] == first["version"]
    assert changes["added"][str(corrected)] == 1 and changes["removed"][str(labels[victim])] == 1
    assert sum(changes["added"].values()) == sum(changes["removed"].values()) == 1


def test_stages_report_what_is_new_and_latest_follows_the_newest_build(s3, buckets, abid_sample, tmp_path):
    """The DAG's path: three stages, each reading the previous one's staging document from S3."""
    from inventory_pipeline.dataset.stages import run_copy, run_select, run_split

    source, dest = buckets
    labels = upload_sample(s3, source, abid_sample)
    small, full = tmp_path / "small.json", tmp_path / "full.json"
    small.write_text(json.dumps(file_list_for({i: labels[i] for i in sorted(labels)[:60]})))
    full.write_text(json.dumps(file_list_for(labels)))

    def stages(file_list):
        settings = settings_for(source, dest, file_list=str(file_list))
        selection = run_select(s3, settings)
        copy = run_copy(s3, settings, selection["selection_key"])
        return selection, copy, run_split(s3, settings, copy["copy_key"])

    selection, copy, first = stages(small)
    assert selection["new"] == selection["total"] == 60 and selection["source_bucket"] == source
    assert selection["selection_key"].startswith("proj/staging/selections/")
    assert copy["copied"] == 60 and copy["accepted"] == 60 and copy["rejected"] == 0
    assert copy["copy_key"].startswith("proj/staging/copies/")

    selection, copy, second = stages(full)
    assert selection["new"] == 40 and copy["copied"] == 40 and copy["skipped"] == 60
    assert second["version"] != first["version"]
    assert sum(n for split in second["counts"].values() for n in split.values()) == 100
    # An image keeps its split as the dataset grows.
    old = json.loads(s3.get_object(Bucket=dest, Key=first["manifest_key"])["Body"].read())
    new = json.loads(s3.get_object(Bucket=dest, Key=second["manifest_key"])["Body"].read())
    new_split = {e["image_id"]: e["split"] for e in new["entries"]}
    assert all(new_split[e["image_id"]] == e["split"] for e in old["entries"])
    assert new["settings"]["reject_threshold"] == 0.05 and new["source"]["selection_key"]

    def latest():
        return json.loads(s3.get_object(Bucket=dest, Key="proj/datasets/latest.json")["Body"].read())["version"]

    assert latest() == second["version"]
    _, copy, again = stages(small)  # the older selection again: reused with zero copies, and now the latest
    assert again["version"] == first["version"] and again["copied"] == 0 and copy["copied"] == 0
    assert latest() == first["version"]


def test_source_changed_after_selection_is_refused_not_mixed_in(s3, buckets, abid_sample, tmp_path):
    """Select pins each object's ETag; copy reads and copies only those versions (If-Match)."""
    from inventory_pipeline.dataset.stages import run_copy, run_select

    source, dest = buckets
    labels = upload_sample(s3, source, abid_sample)
    file_list = tmp_path / "fl.json"
    file_list.write_text(json.dumps(file_list_for(labels)))
    settings = settings_for(source, dest, file_list=str(file_list))
    selection = run_select(s3, settings)
    victim = next(image_id for image_id, label in sorted(labels.items()) if label != 1)
    s3.put_object(Bucket=source, Key=f"metadata/{victim}.json", Body=b'{"EXPECTED_QUANTITY": 1}')
    with pytest.raises(errors.DatasetError, match=f"s3://{source} changed since it was selected"):
        run_copy(s3, settings, selection["selection_key"])
    assert keys(s3, dest, "proj/raw/") == []  # validation comes first: nothing was copied

    again = build_dataset(s3, settings)  # a new run pins the new version, whose count contradicts the list
    assert again["rejected"] == [
        {
            "key": f"metadata/{victim}.json",
            "reason": f"EXPECTED_QUANTITY 1 does not match the selected label {labels[victim]}",
        }
    ]


def test_listing_rejects_unreadable_metadata_and_excludes_other_counts(s3, buckets, abid_sample):
    source, dest = buckets
    labels = upload_sample(s3, source, abid_sample)
    photo = (abid_sample / "bin-images" / f"{sorted(labels)[0]}.jpg").read_bytes()
    for image_id, quantity in (("empty-bin", 0), ("crowded-bin", 12)):  # real ABID has both: not ours
        s3.put_object(Bucket=source, Key=f"bin-images/{image_id}.jpg", Body=photo)
        metadata = {"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": quantity}
        s3.put_object(Bucket=source, Key=f"metadata/{image_id}.json", Body=json.dumps(metadata).encode())
    broken = sorted(labels)[-2:]
    s3.put_object(Bucket=source, Key=f"metadata/{broken[0]}.json", Body=b"<html>502 Bad Gateway</html>")
    s3.put_object(Bucket=source, Key=f"metadata/{broken[1]}.json", Body=b'{"EXPECTED_QUANTITY": 2.5}')

    summary = build_dataset(s3, settings_for(source, dest))
    assert summary["selected"] == 98 and summary["excluded"] == 2
    assert {r["key"]: r["reason"] for r in summary["rejected"]} == {
        f"metadata/{broken[0]}.json": "metadata is not JSON (JSONDecodeError)",
        f"metadata/{broken[1]}.json": "EXPECTED_QUANTITY is not an integer: 2.5",
    }
    manifest = json.loads(s3.get_object(Bucket=dest, Key=summary["manifest_key"])["Body"].read())
    assert len(manifest["entries"]) == 98 and len(manifest["rejects"]) == 2
    assert manifest["source"]["excluded"] == 2

    # The same two unreadable files are too many for a 1% threshold: refused, nothing new published.
    with pytest.raises(errors.TooManyRejects, match=r"2 of 100 selected images were rejected \(2.0% > threshold"):
        build_dataset(s3, settings_for(source, dest, reject_threshold=0.01, prefix="strict"))
    assert keys(s3, dest, "strict/raw/") == [] and keys(s3, dest, "strict/datasets/") == []


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).with_name("inventory-pipeline"))
    return subprocess.run([exe, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=300)


def test_cli_seed_and_build(local_stack, s3, bucket_name):
    env = local_stack.env()
    seeded = _cli(["seed-synthetic", "--bucket", f"{bucket_name}-src", "--images", "60", "--json"], env)
    assert seeded.returncode == 0, seeded.stderr
    seed = json.loads(seeded.stdout.strip().splitlines()[-1])
    assert seed["images"] == 60 and sum(seed["counts"].values()) == 60

    s3.create_bucket(Bucket=f"{bucket_name}-dst")
    src, dst = f"{bucket_name}-src", f"{bucket_name}-dst"
    built = _cli(
        [
            "dataset",
            "build",
            "--source-bucket",
            src,
            "--file-list",
            f"s3://{src}/file_list.json",
            "--bucket",
            dst,
            "--prefix",
            "x",
            "--json",
        ],
        env,
    )
    assert built.returncode == 0, built.stderr
    summary = json.loads(built.stdout.strip().splitlines()[-1])
    assert set(summary) >= {"version", "counts", "copied", "skipped", "rejected", "manifest_key"}
    assert summary["copied"] == 60 and summary["rejected"] == []

    refused = _cli(["dataset", "build", "--source-bucket", "no-such-src-x", "--bucket", dst, "--json"], env)
    assert refused.returncode != 0
    assert json.loads(refused.stdout.strip().splitlines()[-1])["error"] == "SourceNotFound"

    # 4 of 60 (6.7%) broken: above the 5% default, refused with the reject list, nothing published.
    for image_id in [k.rsplit("/", 1)[-1][:-5] for k in keys(s3, src, "metadata/")][:4]:
        s3.put_object(Bucket=src, Key=f"metadata/{image_id}.json", Body=b"{truncated")
    too_many = _cli(["dataset", "build", "--source-bucket", src, "--bucket", dst, "--prefix", "y", "--json"], env)
    assert too_many.returncode == 2
    refusal = json.loads(too_many.stdout.strip().splitlines()[-1])
    assert refusal["error"] == "TooManyRejects" and len(refusal["rejected"]) == 4
    assert "4 of 60 selected images were rejected" in too_many.stdout
    assert keys(s3, dst, "y/raw/") == [] and keys(s3, dst, "y/datasets/") == []
