"""One definition of `s3://` parsing and of "the key is missing", used by every module of the package."""

import re
from pathlib import Path

import pytest

from inventory_pipeline.aws.s3_paths import is_missing, split_s3_uri

PACKAGE = Path(__file__).resolve().parents[2] / "plugins" / "inventory_pipeline"


def _client_error(code: str):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "x"}}, "HeadObject")


def test_split_and_the_prefix_form():
    assert split_s3_uri("s3://b/a/k.json") == ("b", "a/k.json")
    assert split_s3_uri("s3://b", require_key=False) == ("b", "")
    for bad in ("s3://b", "s3://b/", "s3:///k", "b/k", "https://b/k"):
        with pytest.raises(ValueError, match="not an s3://bucket/key URI"):
            split_s3_uri(bad)


def test_missing_means_the_three_codes_s3_uses():
    assert all(is_missing(_client_error(code)) for code in ("NoSuchKey", "404", "NotFound"))
    assert not is_missing(_client_error("AccessDenied")) and not is_missing(ValueError("x"))


def test_callers_parse_through_the_shared_definition():
    from inventory_pipeline.local_aws.runner.workspace import WorkspaceError
    from inventory_pipeline.local_aws.runner.workspace import split_s3_uri as workspace_split
    from inventory_pipeline.rules.storage import split_s3_uri as storage_split

    assert storage_split("s3://b/p/q/") == ("b", "p/q")
    with pytest.raises(WorkspaceError, match="not an s3://bucket/key URI"):
        workspace_split("b/key")


def test_no_module_parses_s3_uris_or_missing_codes_by_hand():
    by_hand = re.compile(r'\[5:\]\.partition\("/"\)|in \("(404|NoSuchKey)", "(404|NoSuchKey)"')
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "s3_paths.py" and by_hand.search(path.read_text())
    ]
    assert offenders == []
