"""boto3 clients with the retry policy every part of the pipeline uses."""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path
from typing import Any

# Adaptive mode adds client-side rate limiting on top of exponential backoff, which is what S3 asks for
# when it answers SlowDown/503 during a large parallel copy.
RETRY_CONFIG = {"mode": "adaptive", "max_attempts": 10}


def botocore_config(max_pool_connections: int = 32, **extra: Any):
    from botocore.config import Config

    return Config(retries=dict(RETRY_CONFIG), max_pool_connections=max_pool_connections, **extra)


def fast_timestamp(value: Any):
    """botocore's timestamp parsing without dateutil for the two forms S3 sends: ISO 8601 in listings
    (`LastModified` of each key) and RFC 822 in headers (`Last-Modified` of every GET and HEAD). dateutil took
    2.4 and 3.6 ms per value on this 2-core machine (0.03 and 0.2 ms here): most of a GetObject's client CPU,
    and seconds for a listing of a few thousand keys. Anything else goes to botocore's parser, unchanged."""
    import datetime
    import email.utils

    from botocore.utils import parse_timestamp

    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value)
            if parsed.tzinfo is not None:
                return parsed
        except ValueError:
            try:
                return email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                pass
    return parse_timestamp(value)


@functools.cache  # a new botocore session loads and parses the service's JSON model (SageMaker's: 2 MB, 0.5 s)
def service_model(service: str) -> Any:
    """botocore's model of `service` (shapes, enums, operations), read once per process."""
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


_LOADER_LOCK = threading.Lock()
_LOADER: Any = None


def _shared_loader(first_session: Any) -> Any:
    """One botocore data loader for the process. Every client still gets a fresh session (credentials, region
    and endpoint settings resolved when it is made, as before), but a fresh session's own loader re-reads and
    re-parses endpoints, partitions and the service model: 0.1-0.3 s of CPU per client on this 2-core machine
    (the local runner makes three before its job downloads anything), 0.01-0.03 s through a loader that has
    them cached. Call with _LOADER_LOCK held."""
    global _LOADER
    if _LOADER is None:
        _LOADER = first_session.get_component("data_loader")  # built from that session's AWS_DATA_PATH
        import boto3

        _LOADER.search_paths.append(str(Path(boto3.__file__).parent / "data"))
    return _LOADER


def make_client(
    service: str,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    max_pool_connections: int = 32,
    **session_kwargs: Any,
):
    """A boto3 client for `service`; `endpoint_url` points it at the local stack when given."""
    import boto3
    import botocore.session

    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=fast_timestamp)
    with _LOADER_LOCK:  # boto3's Session adds its data directory to the (shared) loader's search paths
        shared = _shared_loader(core)
        known = list(shared.search_paths)
        core.register_component("data_loader", shared)
        session = boto3.session.Session(region_name=region_name, botocore_session=core, **session_kwargs)
        del shared.search_paths[len(known) :]  # already there from the first session
    return session.client(
        service,
        endpoint_url=endpoint_url,
        config=botocore_config(max_pool_connections=max_pool_connections),
    )


_CONNECTION_CLIENTS: dict[tuple[Any, ...], Any] = {}
_CONNECTION_CLIENTS_LOCK = threading.Lock()


def client_from_connection(service: str, aws_conn_id: str = "aws_default", max_pool_connections: int = 32):
    """A client built by the Amazon provider from an Airflow connection (honours per-service endpoints).

    Kept for the process while the connection reads the same: the provider builds each client on a fresh
    botocore session that re-parses the service model (0.1-0.3 s of CPU a client on this 2-core machine, and a
    task asks for several); one process running many tasks (`airflow dags test`) asks hundreds of times. A
    changed connection (other keys, role or endpoints) gets a new client; botocore clients are thread-safe and
    the provider's sessions refresh assumed-role credentials themselves."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(
        aws_conn_id=aws_conn_id,
        client_type=service,
        config=botocore_config(max_pool_connections=max_pool_connections),
    )
    key = (service, aws_conn_id, max_pool_connections, _fingerprint(hook))
    with _CONNECTION_CLIENTS_LOCK:
        client = _CONNECTION_CLIENTS.get(key)
    if client is None:
        client = hook.get_conn()
        with _CONNECTION_CLIENTS_LOCK:
            if len(_CONNECTION_CLIENTS) >= 64:  # connections that keep changing (tests' stacks): start over
                _CONNECTION_CLIENTS.clear()
            _CONNECTION_CLIENTS[key] = client
    return client


def _fingerprint(hook: Any) -> str:
    """What the connection says (its secret hashed), with the environment's part of the default credential
    chain: equal while neither changes, different otherwise."""
    import hashlib
    import os

    try:
        conn = hook.get_connection(hook.aws_conn_id)
        fields = [conn.conn_type, conn.host, conn.login, conn.password, conn.port, conn.schema, conn.extra]
    except Exception:  # missing: the provider falls back to the default credential chain (and says so)
        fields = ["no connection"]
    fields += sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))
    return hashlib.sha256(json.dumps(fields, default=str).encode()).hexdigest()


def s3_client(settings: Any) -> Any:
    """The S3 client every task uses, from the settings' Airflow connection."""
    from inventory_pipeline.aws.clients import client_from_connection

    # Enough pooled connections for the copy pool, so threads never wait on each other for a socket.
    return client_from_connection("s3", settings.aws_conn_id, max_pool_connections=settings.copy_workers + 4)


def describe_training_job(aws_conn_id: str, job_name: str) -> dict[str, Any]:
    """DescribeTrainingJob through the Airflow connection."""
    return client_from_connection("sagemaker", aws_conn_id).describe_training_job(TrainingJobName=job_name)
