"""The train task's pre-create check of its input URIs says "access denied to <uri>" for S3's 403, not
"SageMaker refused the training job" (issue 26: a policy without the `pretrained` prefix failed that way)."""

from __future__ import annotations

from types import SimpleNamespace

import boto3
import pytest
from airflow.sdk.exceptions import AirflowFailException
from botocore.stub import Stubber

from inventory_pipeline.airflow.operators import ChannelCheckingSageMakerHook, TrainingJobOperator


def hook_answering(*answers: tuple[str, dict | int]) -> ChannelCheckingSageMakerHook:
    """The hook with an S3 client that answers each call in turn: (operation, response dict | HTTP status)."""
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
    stubber = Stubber(s3)
    for operation, answer in answers:
        if isinstance(answer, int):
            stubber.add_client_error(operation, service_error_code=str(answer), http_status_code=answer)
        else:
            stubber.add_response(operation, answer)
    stubber.activate()
    hook = ChannelCheckingSageMakerHook(aws_conn_id=None)
    hook.__dict__["s3_hook"] = SimpleNamespace(get_conn=lambda: s3)
    return hook


def test_the_train_operator_uses_the_checking_hook() -> None:
    assert TrainingJobOperator.aws_hook_class is ChannelCheckingSageMakerHook


def test_a_403_on_the_key_names_the_uri_and_the_grant() -> None:
    hook = hook_answering(("head_bucket", {}), ("head_object", 403))
    with pytest.raises(AirflowFailException, match=r"access denied to s3://b/abid/pretrained/x/ \(HeadObject\)"):
        hook.check_s3_url("s3://b/abid/pretrained/x/")


def test_a_403_on_the_bucket_is_access_denied_not_a_missing_bucket() -> None:
    hook = hook_answering(("head_bucket", 403))
    with pytest.raises(AirflowFailException, match=r"access denied to s3://b/k \(HeadBucket\)"):
        hook.check_s3_url("s3://b/k")


def test_missing_inputs_and_prefixes() -> None:
    with pytest.raises(AirflowFailException, match="bucket of s3://b/k does not exist"):
        hook_answering(("head_bucket", 404)).check_s3_url("s3://b/k")
    empty = hook_answering(("head_bucket", {}), ("head_object", 404), ("list_objects_v2", {"KeyCount": 0}))
    with pytest.raises(AirflowFailException, match="s3://b/k does not exist"):
        empty.check_s3_url("s3://b/k")
    prefix = hook_answering(("head_bucket", {}), ("head_object", 404), ("list_objects_v2", {"KeyCount": 1}))
    assert prefix.check_s3_url("s3://b/k")
    assert hook_answering(("head_bucket", {}), ("head_object", {})).check_s3_url("s3://b/k")
