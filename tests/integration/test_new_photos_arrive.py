"""`make demo`'s week 3 photos (demo.arrivals): they go up only once the running week's selection is pinned (its
`select_source` has ended), exactly once, and a failed upload reaches the demo instead of a silent short week."""

from __future__ import annotations

import json

import pytest

from inventory_pipeline.dataset.seed import seed_synthetic
from inventory_pipeline.demo.arrivals import NewPhotos

pytestmark = pytest.mark.integration

STARTED = "2026-01-12T00:00:01Z [info] [DAG TEST] starting task_id=select_source map_index=-1 [airflow.sdk]\n"
PINNED = "2026-01-12T00:00:02Z [info] [DAG TEST] end task task_id=select_source map_index=-1 [airflow.sdk]\n"
OTHER_TASK = "2026-01-12T00:00:03Z [info] [DAG TEST] end task task_id=select_source_copy map_index=-1 [airflow]\n"


def listed_ids(s3, bucket: str) -> set[str]:
    body = json.loads(s3.get_object(Bucket=bucket, Key="file_list.json")["Body"].read())
    return {path.rsplit("/", 1)[-1].removesuffix(".json") for paths in body.values() for path in paths}


def test_the_new_photos_arrive_once_the_selection_is_pinned_and_only_once(s3, bucket_name):
    seed_synthetic(s3, bucket_name, images=5, seed=7)
    before = listed_ids(s3, bucket_name)
    photos = NewPhotos(s3, bucket_name, count=3, seed=7, first_index=6)
    try:
        photos.take()
        for line in (STARTED, OTHER_TASK):
            photos.on_line(line)
        assert not photos.uploading  # nothing goes up before the selection is pinned
        assert listed_ids(s3, bucket_name) == before
        photos.on_line(PINNED)
        photos.on_line(PINNED)  # a second sign changes nothing
        seeded = photos.arrived()
    finally:
        photos.close()
    assert seeded["images"] == 3
    after = listed_ids(s3, bucket_name)
    assert before < after and len(after - before) == 3
    assert max(after) == "00008"


def test_a_failed_upload_reaches_the_demo(s3, bucket_name):
    seed_synthetic(s3, bucket_name, images=5, seed=7)
    photos = NewPhotos(s3, bucket_name, count=3, seed=7, first_index=9)  # not the ids that come next
    try:
        photos.take()
        photos.on_line(PINNED)
        with pytest.raises(ValueError, match="ids 00006..00008"):
            photos.arrived()
    finally:
        photos.close()
    assert len(listed_ids(s3, bucket_name)) == 5  # nothing was added


def test_photos_never_announced_still_arrive_before_the_next_week(s3, bucket_name):
    """Week 2 ended before its selection (a refused conf, a failure): week 3 waits for the photos all the same."""
    seed_synthetic(s3, bucket_name, images=2, seed=1)
    photos = NewPhotos(s3, bucket_name, count=2, seed=1, first_index=3)
    try:
        photos.take()
        assert photos.arrived()["images"] == 2
    finally:
        photos.close()
    assert len(listed_ids(s3, bucket_name)) == 4
