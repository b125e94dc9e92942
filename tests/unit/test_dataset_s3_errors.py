"""How the data plane reads S3's answers, without a server: botocore errors become errors a person can act on,
and an object deleted between a listing and a read becomes a counted reject (botocore's Stubber)."""

import logging
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, NoCredentialsError
from botocore.stub import Stubber

from inventory_pipeline.dataset import s3io
from inventory_pipeline.dataset.abid import Pair
from inventory_pipeline.dataset.copy import Planned, validate
from inventory_pipeline.dataset.errors import DatasetError, InvalidFileList, NoCredentials, SourceNotFound
from inventory_pipeline.dataset.packs import Stored
from inventory_pipeline.dataset.select import load_file_list


def client_error(code: str, operation: str = "ListObjectsV2") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, operation)


@pytest.mark.parametrize(
    ("raised", "expected", "message"),
    [
        (
            client_error("NoSuchBucket"),
            SourceNotFound,
            "bucket s3://src does not exist (while listing metadata/)",
        ),
        (client_error("AccessDenied"), SourceNotFound, "access denied to s3://src (while listing metadata/)"),
        (NoCredentialsError(), NoCredentials, "no AWS credentials while listing metadata/ (s3://src)"),
        (
            client_error("PreconditionFailed", "CopyObject"),
            DatasetError,
            "changed since it was selected (while listing metadata/",
        ),
        (client_error("InternalError"), DatasetError, "S3 error InternalError while listing metadata/"),
    ],
)
def test_botocore_errors_name_the_bucket_and_the_step(raised, expected, message):
    with pytest.raises(expected, match=message.replace("(", r"\(").replace(")", r"\)")):
        with s3io.explained("src", "listing metadata/"):
            raise raised


def test_other_exceptions_pass_through_unchanged():
    with pytest.raises(KeyError), s3io.explained("src", "anything"):
        raise KeyError("not an S3 error")


def test_is_missing():
    assert s3io.is_missing(client_error("NoSuchKey", "GetObject"))
    assert s3io.is_missing(client_error("404", "HeadObject"))
    assert not s3io.is_missing(client_error("AccessDenied", "GetObject"))
    assert not s3io.is_missing(ValueError("x"))


@pytest.mark.parametrize("uri", ["s3://bucket", "s3://bucket/", "s3:///key", "bucket/key", ""])
def test_s3_uri_needs_a_bucket_and_a_key(uri):
    with pytest.raises(ValueError, match="not an s3://bucket/key URI"):
        s3io.split_s3_uri(uri)
    assert s3io.split_s3_uri("s3://b/a/file_list.json") == ("b", "a/file_list.json")


def test_file_list_location_errors(tmp_path):
    with pytest.raises(SourceNotFound, match="does not exist"):
        load_file_list(None, str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidFileList, match="is not JSON"):
        load_file_list(None, str(tmp_path / "bad.json"))
    with pytest.raises(InvalidFileList, match="is not s3://bucket/key"):
        load_file_list(None, "s3://only-a-bucket")


@pytest.fixture()
def stubbed():
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
    with Stubber(s3) as stubber:
        yield s3, stubber
        stubber.assert_no_pending_responses()


def _planned(size: int = 30_000, stored: bool = False) -> Planned:
    info = s3io.ObjectInfo(size, "etag")
    location = Stored("raw/packs/train/p.tar", 512, size) if stored else None
    return Planned(Pair("00042", 3), info, info, stored=location, validated=False)


def test_validation_turns_a_key_deleted_after_the_listing_into_a_reject(stubbed):
    s3, stubber = stubbed
    stubber.add_client_error(
        "get_object",
        "NoSuchKey",
        expected_params={"Bucket": "src", "Key": "metadata/00042.json", "IfMatch": "etag"},
    )
    assert validate(s3, "src", "", _planned()) == ({"key": "metadata/00042.json", "reason": "missing in source"}, None)


def body(data: bytes) -> Any:
    """A GetObject answer's Body."""
    import io

    from botocore.response import StreamingBody

    return StreamingBody(io.BytesIO(data), len(data))


METADATA = {"Bucket": "src", "Key": "metadata/00042.json", "IfMatch": "etag"}
IMAGE = {"Bucket": "src", "Key": "bin-images/00042.jpg", "IfMatch": "etag"}  # no Range: the whole photo


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GIF89a" + b"\0" * 200_000, "image is not a JPEG (no FF D8 FF signature)"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 200_000 + b"\x5a" * 32, "image is truncated (no JPEG end marker FF D9 in its"),
    ],
)
def test_a_photo_is_read_whole_once_and_rejected_at_either_end(stubbed, data, reason):
    s3, stubber = stubbed
    stubber.add_response("get_object", {"Body": body(b'{"EXPECTED_QUANTITY": 3}')}, METADATA)
    stubber.add_response("get_object", {"Body": body(data)}, IMAGE)
    reject, stored = validate(s3, "src", "", _planned(len(data)))
    assert reject["key"] == "bin-images/00042.jpg" and reject["reason"].startswith(reason) and stored is None


def test_a_valid_photo_comes_back_to_be_stored_and_a_stored_one_is_not_read_again(stubbed):
    s3, stubber = stubbed
    photo = b"\xff\xd8\xff\xe0" + b"\0" * 3000 + b"\xff\xd9"
    stubber.add_response("get_object", {"Body": body(b'{"EXPECTED_QUANTITY": 3}')}, METADATA)
    stubber.add_response("get_object", {"Body": body(photo)}, IMAGE)
    assert validate(s3, "src", "", _planned(len(photo))) == (None, photo)
    # Stored before with this ETag, its metadata changed (a corrected label): one GET, of the metadata only.
    stubber.add_response("get_object", {"Body": body(b'{"EXPECTED_QUANTITY": 3}')}, METADATA)
    assert validate(s3, "src", "", _planned(len(photo), stored=True)) == (None, None)


def test_validation_does_not_hide_other_errors(stubbed):
    s3, stubber = stubbed
    stubber.add_client_error("get_object", "InternalError", http_status_code=500)
    with pytest.raises(ClientError):
        validate(s3, "src", "", _planned())


def test_progress_logs_at_intervals(caplog):
    caplog.set_level(logging.INFO, logger="inventory_pipeline.dataset.s3io")
    progress = s3io.Progress("copied", 5000)
    for _ in range(5000):
        progress.step()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"copied: {n}/5000" for n in range(500, 5001, 500)]


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-30T01:29:48.000Z",
        "2026-11-30T01:29:48Z",
        "Mon, 30 Nov 2026 01:29:48 GMT",
        1764466188.5,
        "1764466188",
        "2026-11-30T01:29:48",
    ],  # the last two: not S3's forms, botocore's parser decides
)
def test_fast_timestamps_are_the_instants_botocore_parses(value):
    from botocore.utils import parse_timestamp

    from inventory_pipeline.aws.clients import fast_timestamp

    fast, botocore = fast_timestamp(value), parse_timestamp(value)
    assert fast == botocore and (fast.tzinfo is None) == (botocore.tzinfo is None)


def test_a_file_list_error_says_where_it_is_wrong_never_what_the_file_says(tmp_path):
    """Issue 26 (2): the error reaches the task log, the decision, MLflow and SNS; a JSON file that is not a file
    list (credentials, say) must not be echoed into them."""
    from inventory_pipeline.dataset.select import load_file_list, parse_file_list

    secret = "AKIA-not-for-your-eyes"
    for document in ({"aws_secret_access_key": secret}, {"1": [secret]}, {"1": ["metadata/a.json", {"k": secret}]}):
        with pytest.raises(InvalidFileList) as refused:
            parse_file_list(document)
        assert secret not in str(refused.value) and "aws_secret_access_key" not in str(refused.value)
        assert "#" in str(refused.value)  # it names the key or entry by position
    broken = tmp_path / "broken.json"
    broken.write_text('{"token": "' + secret)
    with pytest.raises(InvalidFileList, match="is not JSON") as refused:
        load_file_list(None, str(broken))
    assert secret not in str(refused.value)
