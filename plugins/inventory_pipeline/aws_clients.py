"""boto3 clients with the retry policy every part of the pipeline uses."""

from __future__ import annotations

from typing import Any

# Adaptive mode adds client-side rate limiting on top of exponential backoff, which is what S3 asks for
# when it answers SlowDown/503 during a large parallel copy.
RETRY_CONFIG = {"mode": "adaptive", "max_attempts": 10}


def botocore_config(max_pool_connections: int = 32, **extra: Any):
    from botocore.config import Config

    return Config(retries=dict(RETRY_CONFIG), max_pool_connections=max_pool_connections, **extra)


def make_client(
    service: str,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    max_pool_connections: int = 32,
    **session_kwargs: Any,
):
    """A boto3 client for `service`; `endpoint_url` points it at the local stack when given."""
    import boto3

    session = boto3.session.Session(region_name=region_name, **session_kwargs)
    return session.client(
        service,
        endpoint_url=endpoint_url,
        config=botocore_config(max_pool_connections=max_pool_connections),
    )


def client_from_connection(service: str, aws_conn_id: str = "aws_default", max_pool_connections: int = 32):
    """A client built by the Amazon provider from an Airflow connection (honours per-service endpoints)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(
        aws_conn_id=aws_conn_id,
        client_type=service,
        config=botocore_config(max_pool_connections=max_pool_connections),
    )
    return hook.get_conn()
