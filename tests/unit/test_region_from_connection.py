"""The region has one source of truth: the `aws_default` connection (the request's images follow it)."""

import json

from inventory_pipeline.settings import Settings


def test_the_connections_region_is_the_requests_region(monkeypatch, tmp_path):
    from inventory_pipeline.aws.errors import connection_region

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    conn = {"conn_type": "aws", "login": "k", "password": "s", "extra": {"region_name": "eu-west-1"}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(conn))
    assert connection_region("aws_default") == "eu-west-1"


def test_no_environment_variable_can_make_the_region_disagree_with_the_connection():
    assert Settings.from_sources({}, env={"INVENTORY_REGION": "ap-south-1"}).region == "us-east-1"
