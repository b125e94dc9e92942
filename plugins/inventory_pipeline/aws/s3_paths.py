"""`s3://` URIs and "the key is not there": one definition for the whole package (no boto3 import)."""

from __future__ import annotations

# S3 answers a missing key with NoSuchKey (GET) or a bare 404 / NotFound (HEAD, no body to carry a code).
MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
# A conditional write (If-None-Match / If-Match) whose condition failed: someone else wrote first.
CONFLICT_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})


def split_s3_uri(uri: str, *, require_key: bool = True) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); ValueError for anything else (or an empty key when one is required)."""
    bucket, _, key = uri[5:].partition("/") if uri.startswith("s3://") else ("", "", "")
    if not bucket:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    if require_key and not key:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r} (no key)")
    return bucket, key


# The pipeline's own judgement of a job (the report, self-hosted rule output) lives under `<root>verdicts/<job>/`,
# outside `training-jobs/`: the execution role may write its job's output there, never here (docs/iam-policy.json).
VERDICTS = "verdicts"


def verdicts_uri(bucket: str, root: str, job: str = "") -> str:
    """`s3://<bucket>/<root>verdicts[/<job>]`: where the DAG (never the job) writes what judges a job."""
    return f"s3://{bucket}/{root}{VERDICTS}" + (f"/{job}" if job else "")


def is_missing(exc: BaseException) -> bool:
    """True for a botocore ClientError saying the key does not exist."""
    response = getattr(exc, "response", None) or {}
    return response.get("Error", {}).get("Code") in MISSING_CODES


def is_conflict(exc: BaseException) -> bool:
    """True for a botocore ClientError saying a conditional write lost: the key changed (or exists) already."""
    response = getattr(exc, "response", None) or {}
    return response.get("Error", {}).get("Code") in CONFLICT_CODES
