"""The promotion gate against the local stack's S3."""

import json

import pytest

from inventory_pipeline.promotion import evaluate_and_promote

pytestmark = pytest.mark.integration


@pytest.fixture()
def bucket(s3, bucket_name):
    s3.create_bucket(Bucket=bucket_name)
    for job in ("j1", "j2", "j3", "j4", "j5"):
        s3.put_object(Bucket=bucket_name, Key=f"jobs/{job}/output/model.tar.gz", Body=job.encode())
    return bucket_name


def _decide(s3, bucket, job, accuracy, rmse, blocked=False, min_improvement=0.0):
    model = f"s3://{bucket}/jobs/{job}/output/model.tar.gz"
    metrics = {"accuracy": accuracy, "rmse": rmse}
    return evaluate_and_promote(s3, bucket, "p/", job, model, metrics, blocked, min_improvement, f"run-{job}")


def _champion(s3, bucket):
    model = s3.get_object(Bucket=bucket, Key="p/models/champion/model.tar.gz")["Body"].read().decode()
    metrics = json.loads(s3.get_object(Bucket=bucket, Key="p/models/champion/metrics.json")["Body"].read())
    return model, metrics["job"]


def test_promotion_sequence(s3, bucket):
    assert _decide(s3, bucket, "j1", 0.60, 0.9)["promoted"] is True  # first model
    assert _champion(s3, bucket) == ("j1", "j1")
    assert _decide(s3, bucket, "j2", 0.55, 0.5)["promoted"] is False  # worse accuracy
    assert _decide(s3, bucket, "j3", 0.60, 0.8)["promoted"] is True  # tie on accuracy, lower RMSE
    assert _decide(s3, bucket, "j4", 0.62, 0.7, min_improvement=0.05)["promoted"] is False  # not enough gain
    blocked = _decide(s3, bucket, "j5", 0.99, 0.1, blocked=True)
    assert blocked["promoted"] is False and "blocking rule" in blocked["reason"]
    assert _champion(s3, bucket) == ("j3", "j3")
    history = s3.get_object(Bucket=bucket, Key="p/models/history.jsonl")["Body"].read().decode().splitlines()
    assert [json.loads(line)["job"] for line in history] == ["j1", "j2", "j3", "j4", "j5"]


def test_a_retried_decision_is_not_taken_twice(s3, bucket):
    first = _decide(s3, bucket, "j1", 0.6, 0.9)
    again = _decide(s3, bucket, "j1", 0.6, 0.9)
    assert first["promoted"] and again["repeated"] and again["promoted"]
    history = s3.get_object(Bucket=bucket, Key="p/models/history.jsonl")["Body"].read().decode().splitlines()
    assert len(history) == 1
