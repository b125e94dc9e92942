"""aws_clients.make_client: every client a fresh session (its own credentials and region, read when it is made)
reading botocore's data files through one loader per process, whose search paths do not grow with each client."""

from __future__ import annotations

import pytest

from inventory_pipeline.aws import clients as aws_clients
from inventory_pipeline.aws.clients import make_client

ENDPOINT = "http://127.0.0.1:9"  # never called: these tests only build clients


def access_key(client) -> str:
    return client._request_signer._credentials.access_key


def test_clients_share_one_data_loader_whose_search_paths_stay_put():
    first = make_client("s3", ENDPOINT, "us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
    paths = list(first._loader.search_paths)
    others = [
        make_client(s, ENDPOINT, "eu-west-1", aws_access_key_id="a", aws_secret_access_key="b")
        for s in ("logs", "cloudwatch", "s3", "sagemaker")
    ]
    assert all(client._loader is first._loader for client in others)
    assert first._loader.search_paths == paths
    assert sum(path.endswith("boto3/data") for path in paths) == 1  # boto3's resources still load
    assert hasattr(others[2], "upload_file") and hasattr(others[2], "download_file")


def test_each_client_keeps_its_own_region_and_credentials():
    one = make_client("s3", ENDPOINT, "us-east-1", aws_access_key_id="key-one", aws_secret_access_key="s")
    two = make_client("s3", ENDPOINT, "eu-west-1", aws_access_key_id="key-two", aws_secret_access_key="s")
    assert (access_key(one), one.meta.region_name) == ("key-one", "us-east-1")
    assert (access_key(two), two.meta.region_name) == ("key-two", "eu-west-1")


def test_credentials_from_the_environment_are_read_when_each_client_is_made(monkeypatch: pytest.MonkeyPatch):
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-one")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    before = make_client("logs", ENDPOINT, "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-two")
    after = make_client("logs", ENDPOINT, "us-east-1")
    assert (access_key(before), access_key(after)) == ("env-one", "env-two")
    assert aws_clients._LOADER is after._loader


def _aws_connection(key: str, endpoint: str = ENDPOINT) -> str:
    import json

    extra = {"region_name": "eu-west-1", "service_config": {"s3": {"endpoint_url": endpoint}}}
    return json.dumps({"conn_type": "aws", "login": key, "password": "secret", "extra": extra})


def test_a_connections_client_is_reused_until_the_connection_changes(monkeypatch: pytest.MonkeyPatch):
    """The provider builds each client on a new botocore session (0.1-0.3 s of CPU); one process running many
    tasks (`airflow dags test`) reuses it while the connection reads the same, and gets a new one when it
    changes (other keys, other endpoints)."""
    from inventory_pipeline.aws.clients import client_from_connection

    monkeypatch.setenv("AIRFLOW_CONN_AWS_CACHE_TEST", _aws_connection("key-one"))
    first = client_from_connection("s3", "aws_cache_test")
    assert client_from_connection("s3", "aws_cache_test") is first
    assert client_from_connection("s3", "aws_cache_test", max_pool_connections=8) is not first
    assert client_from_connection("sagemaker", "aws_cache_test") is not first
    monkeypatch.setenv("AIRFLOW_CONN_AWS_CACHE_TEST", _aws_connection("key-two"))
    rotated = client_from_connection("s3", "aws_cache_test")
    assert rotated is not first and access_key(rotated) == "key-two"
    monkeypatch.setenv("AIRFLOW_CONN_AWS_CACHE_TEST", _aws_connection("key-two", "http://127.0.0.1:10"))
    moved = client_from_connection("s3", "aws_cache_test")
    assert moved is not rotated and moved.meta.endpoint_url == "http://127.0.0.1:10"


def test_a_connection_client_follows_the_environments_credentials(monkeypatch: pytest.MonkeyPatch):
    """A connection without keys uses the default credential chain: changed AWS_* variables get a new client."""
    import json

    from inventory_pipeline.aws.clients import client_from_connection

    extra = {"region_name": "eu-west-1", "service_config": {"s3": {"endpoint_url": ENDPOINT}}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_ENV_TEST", json.dumps({"conn_type": "aws", "extra": extra}))
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-one")
    one = client_from_connection("s3", "aws_env_test")
    assert client_from_connection("s3", "aws_env_test") is one
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-two")
    two = client_from_connection("s3", "aws_env_test")
    assert two is not one and access_key(two) == "env-two"
