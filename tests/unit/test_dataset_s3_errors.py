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


def _planned(size: int = 30_000) -> Planned:
    info = s3io.ObjectInfo(size, "etag")
    return Planned(Pair("00042", 3), info, info, copy_image=True, copy_metadata=True)


def test_validation_turns_a_key_deleted_after_the_listing_into_a_reject(stubbed):
    s3, stubber = stubbed
    stubber.add_client_error(
        "get_object",
        "NoSuchKey",
        expected_params={"Bucket": "src", "Key": "metadata/00042.json", "IfMatch": "etag"},
    )
    assert validate(s3, "src", "", _planned()) == {
        "key": "metadata/00042.json",
        "reason": "missing in source",
    }


def body(data: bytes) -> Any:
    """A GetObject answer's Body."""
    import io

    from botocore.response import StreamingBody

    return StreamingBody(io.BytesIO(data), len(data))


def test_validation_reads_only_the_first_bytes_of_a_large_image(stubbed):
    s3, stubber = stubbed
    metadata = {"Bucket": "src", "Key": "metadata/00042.json", "IfMatch": "etag"}
    stubber.add_response("get_object", {"Body": body(b'{"EXPECTED_QUANTITY": 3}')}, metadata)
    image_head = {"Bucket": "src", "Key": "bin-images/00042.jpg", "Range": "bytes=0-15", "IfMatch": "etag"}
    stubber.add_response("get_object", {"Body": body(b"GIF89a" + b"\0" * 10)}, image_head)
    reject = validate(s3, "src", "", _planned(200_000))
    assert reject == {"key": "bin-images/00042.jpg", "reason": "image is not a JPEG (no FF D8 FF signature)"}


def test_validation_reads_the_last_bytes_to_reject_a_truncated_large_image(stubbed):
    s3, stubber = stubbed
    metadata = {"Bucket": "src", "Key": "metadata/00042.json", "IfMatch": "etag"}
    stubber.add_response("get_object", {"Body": body(b'{"EXPECTED_QUANTITY": 3}')}, metadata)
    image = {"Bucket": "src", "Key": "bin-images/00042.jpg", "IfMatch": "etag"}
    head = b"\xff\xd8\xff\xe0" + b"\0" * 12
    stubber.add_response("get_object", {"Body": body(head)}, {**image, "Range": "bytes=0-15"})
    stubber.add_response("get_object", {"Body": body(b"\x5a" * 32)}, {**image, "Range": "bytes=-32"})
    reject = validate(s3, "src", "", _planned(200_000))
    assert reject == {
        "key": "bin-images/00042.jpg",
        "reason": "image is truncated (no JPEG end marker FF D9 in its last bytes)",
    }


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


def test_split_copies_are_guarded_by_the_raw_objects_own_etag(stubbed):
    """Under SSE-KMS bucket encryption a copy's ETag differs from its source's: the split stage names the raw
    object's ETag (recorded by the copy stage), the manifest keeps the source's (the version's identity)."""
    from botocore.stub import ANY

    from inventory_pipeline.dataset.split import publish_dataset

    s3, stubber = stubbed
    accepted = [
        {"image_id": f"{label}{i:03d}", "label": label, "image_key": f"p/raw/bin-images/{label}{i:03d}.jpg",
         "image_etag": f"src-{label}{i:03d}", "raw_image_etag": f"kms-{label}{i:03d}",
         "metadata_key": f"p/raw/metadata/{label}{i:03d}.json"}
        for label in range(1, 6) for i in range(12)
    ]  # fmt: skip
    stubber.add_client_error("head_object", "404", http_status_code=404)  # no manifest yet
    stubber.add_response("list_objects_v2", {"KeyCount": 0, "IsTruncated": False})  # nothing copied yet
    guards = {}
    copy_params = {"Bucket": "b", "Key": ANY, "CopySource": ANY, "CopySourceIfMatch": ANY}
    for _ in accepted:
        stubber.add_response("copy_object", {"CopyObjectResult": {"ETag": '"x"'}}, copy_params)

    def record(params, **_):
        guards[params["CopySource"]["Key"]] = params["CopySourceIfMatch"]

    s3.meta.events.register("provide-client-params.s3.CopyObject", record)
    stubber.add_response("put_object", {"ETag": '"m"'})  # the manifest, last
    stubber.add_client_error("get_object", "NoSuchKey", http_status_code=404)  # no latest.json yet
    stubber.add_response("put_object", {"ETag": '"l"'})
    summary = publish_dataset(s3, "b", "p/", accepted, [], {}, workers=1)
    assert guards == {a["image_key"]: a["raw_image_etag"] for a in accepted}
    assert summary["total"] == 60 and summary["copied"] == 60


@pytest.mark.parametrize(
    ("tail", "reject"),
    [(b"\xff\xd9", None), (b"\x5a\x5a", "image is truncated (no JPEG end marker FF D9 in its last bytes)")],
)
def test_a_small_image_is_checked_at_both_ends_with_one_request(stubbed, tail, reject):
    s3, stubber = stubbed
    data = b"\xff\xd8\xff\xe0" + b"\0" * 3000 + tail
    metadata = {"Bucket": "src", "Key": "metadata/00042.json", "IfMatch": "etag"}
    stubber.add_response("get_object", {"Body": body(b'{"EXPECTED_QUANTITY": 3}')}, metadata)
    image = {"Bucket": "src", "Key": "bin-images/00042.jpg", "IfMatch": "etag"}  # no Range: the whole object
    stubber.add_response("get_object", {"Body": body(data)}, image)
    result = validate(s3, "src", "", _planned(len(data)))
    assert result == (None if reject is None else {"key": "bin-images/00042.jpg", "reason": reject})
    stubber.assert_no_pending_responses()
