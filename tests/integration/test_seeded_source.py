"""moto started with a synthetic source (`make demo`'s week 1) holds what the S3 API seeding writes, byte for byte,
and a seeding that fails takes the server down instead of serving half a bucket."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from inventory_pipeline.aws.clients import make_client
from inventory_pipeline.dataset.seed import seed_synthetic
from inventory_pipeline.local_aws.stack import LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY, LocalStack, moto_with_source

pytestmark = pytest.mark.integration


def objects(s3, bucket: str) -> dict[str, tuple]:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for listed in page["Contents"]:
            got = s3.get_object(Bucket=bucket, Key=listed["Key"])
            out[listed["Key"]] = (got["Body"].read(), got["ContentType"], listed["ETag"], listed["Size"])
    return out


def test_a_source_seeded_in_the_store_is_what_the_api_seeding_writes(tmp_path: Path):
    with LocalStack(tmp_path, servers=[moto_with_source("store-seeded", 30, 7)]) as stack:
        s3 = make_client(
            "s3",
            endpoint_url=stack.endpoints["s3"],
            region_name=stack.region,
            aws_access_key_id=LOCAL_ACCESS_KEY,
            aws_secret_access_key=LOCAL_SECRET_KEY,
        )
        deadline = time.monotonic() + 60
        while "file_list.json" not in {o["Key"] for o in s3.list_objects_v2(Bucket="store-seeded").get("Contents", [])}:
            assert time.monotonic() < deadline, (tmp_path / "moto.log").read_text()
            time.sleep(0.1)
        seed_synthetic(s3, "api-seeded", images=30, seed=7)
        store, api = objects(s3, "store-seeded"), objects(s3, "api-seeded")
        assert len(store) == 2 * 30 + 1
        assert store == api  # keys, bytes, content types, ETags and sizes

        # a later week's photos go through the API on top of it, as on the API-seeded bucket
        for bucket in ("store-seeded", "api-seeded"):
            seed_synthetic(s3, bucket, images=5, seed=7, add=True)
        assert objects(s3, "store-seeded") == objects(s3, "api-seeded")
        assert "ready, 30 photos" in (tmp_path / "moto.log").read_text()


def test_a_seeding_that_fails_stops_the_server(tmp_path: Path):
    spec = moto_with_source("ab", 3, 7)  # too short for a bucket name
    command = spec.command("127.0.0.1", 0, {}, tmp_path)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "InvalidBucketName" in done.stderr


def test_a_malformed_source_is_refused_before_the_server_starts():
    done = subprocess.run(
        [sys.executable, "-m", "inventory_pipeline.local_aws.moto_server", "--synthetic-source", "bucket:many"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "BUCKET:IMAGES:SEED" in done.stderr


def test_photos_rendered_beforehand_arrive_as_the_generated_ones_and_wrong_ids_write_nothing(s3):
    from inventory_pipeline.dataset.synthetic import render_all

    for bucket in ("rendered-first", "rendered-here"):
        seed_synthetic(s3, bucket, images=6, seed=3)
    with pytest.raises(ValueError, match="ids 00007..00010"):
        seed_synthetic(s3, "rendered-first", images=4, seed=3, add=True, rendered=render_all(4, seed=3, start_index=8))
    assert len(objects(s3, "rendered-first")) == 2 * 6 + 1  # nothing written
    seed_synthetic(s3, "rendered-first", images=4, seed=3, add=True, rendered=render_all(4, seed=3, start_index=7))
    seed_synthetic(s3, "rendered-here", images=4, seed=3, add=True)
    assert objects(s3, "rendered-first") == objects(s3, "rendered-here")
