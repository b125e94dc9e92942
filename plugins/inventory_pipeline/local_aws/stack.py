"""Start and stop the local AWS stack: moto's server (S3, CloudWatch Logs and metrics, SNS, SQS), the
project's local SageMaker server where available, and a real MLflow tracking server (SQLite backend store,
artifacts in the local S3) for tracking and the model registry.

`LocalStack` is a context manager for tests and scripts; `up()`/`down()` back the CLI and remember what they
started in a state file, so `down` stops exactly the processes `up` started and nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
# moto accepts any credentials; fixed dummy values keep logs and connections reproducible.
LOCAL_ACCESS_KEY = "local-access-key"
LOCAL_SECRET_KEY = "local-secret-key"
STATE_FILE_NAME = "state.json"


@dataclass(frozen=True)
class ServerSpec:
    """One local server: how to start it on a port and which AWS services it answers for."""

    name: str
    services: tuple[str, ...]
    command: Callable[[str, int, dict[str, str], Path], list[str]]
    health_path: str = "/"
    startup_timeout_s: float = 60.0
    env: dict[str, str] = field(default_factory=dict)  # extra environment of this server only


def _moto_command(host: str, port: int, endpoints: dict[str, str], state_dir: Path) -> list[str]:
    # moto's own server, minus two per-request costs (see moto_server.py)
    return [sys.executable, "-m", "inventory_pipeline.local_aws.moto_server", "-H", host, "-p", str(port)]


MOTO = ServerSpec(
    name="moto", services=("s3", "logs", "cloudwatch", "sns", "sqs"), command=_moto_command, health_path="/moto-api/"
)


def moto_with_source(bucket: str, images: int, seed: int) -> ServerSpec:
    """moto starting with `bucket` holding `images` synthetic photos (moto_server.py); `file_list.json`, written
    last, says they are all there."""

    def command(host: str, port: int, endpoints: dict[str, str], state_dir: Path) -> list[str]:
        return [*_moto_command(host, port, endpoints, state_dir), "--synthetic-source", f"{bucket}:{images}:{seed}"]

    return replace(MOTO, command=command)


# What the stack provisions once moto answers: MLflow's artifact bucket, and the decisions topic with a queue
# subscribed to it, so people (and tests) can read back what the pipeline announced.
MLFLOW_ARTIFACT_BUCKET = "mlflow-artifacts"
NOTIFY_TOPIC = "inventory-retraining-decisions"


def sagemaker_command(host: str, port: int, endpoints: dict[str, str], state_dir: Path) -> list[str]:
    """The local SageMaker server's command line (tests start second servers with other endpoints or flags)."""
    return [
        sys.executable,
        "-m",
        "inventory_pipeline.local_aws.sagemaker_api",
        "--host",
        host,
        "--port",
        str(port),
        "--state-dir",
        str(state_dir / "sagemaker"),
        "--s3-endpoint",
        endpoints["s3"],
        "--logs-endpoint",
        endpoints["logs"],
        "--cloudwatch-endpoint",
        endpoints.get("cloudwatch", endpoints["logs"]),
    ]


SAGEMAKER = ServerSpec(name="sagemaker", services=("sagemaker",), command=sagemaker_command, health_path="/ping")


# "proxied" (default): clients send artifacts through the server. "s3": as a SageMaker managed tracking server,
# the server hands out s3:// artifact URIs and clients write the store themselves (the IAM test's stack).
MLFLOW_ARTIFACTS_ENV = "INVENTORY_LOCAL_MLFLOW_ARTIFACTS"


def _mlflow_command(host: str, port: int, endpoints: dict[str, str], state_dir: Path) -> list[str]:
    store = state_dir / "mlflow"
    store.mkdir(parents=True, exist_ok=True)
    artifacts = (
        ["--default-artifact-root", f"s3://{MLFLOW_ARTIFACT_BUCKET}/", "--no-serve-artifacts"]
        if os.environ.get(MLFLOW_ARTIFACTS_ENV) == "s3"
        else ["--artifacts-destination", f"s3://{MLFLOW_ARTIFACT_BUCKET}/"]
    )
    # MLflow's own app and uvicorn, as `mlflow server --workers 1` runs them, without its CLI's second process
    return [
        sys.executable,
        "-m",
        "inventory_pipeline.local_aws.mlflow_server",
        "--backend-store-uri",
        f"sqlite:///{(store / 'mlflow.db').resolve()}",
        *artifacts,
        "--host",
        host,
        "--port",
        str(port),
    ]


# MLflow's server imports ~5 s of Python on a quiet 2-core machine: it gets a longer start-up allowance.
# Its S3 calls (artifacts) are the tracking server's own: on AWS a managed server's role makes them, not ours.
MLFLOW = ServerSpec(
    name="mlflow",
    services=("mlflow",),
    command=_mlflow_command,
    health_path="/health",
    startup_timeout_s=300.0,
    env={"INVENTORY_RECORD_AWS_PRINCIPAL": "mlflow_tracking_server"},
)


def default_servers(moto: ServerSpec = MOTO) -> list[ServerSpec]:
    """moto, the local SageMaker server (when its module is part of this install) and MLflow."""
    import importlib.util

    servers = [moto]
    if importlib.util.find_spec("inventory_pipeline.local_aws.sagemaker_api") is not None:
        servers.append(SAGEMAKER)
    return [*servers, MLFLOW]


def provision(endpoints: dict[str, str], region: str) -> dict[str, str]:
    """Create what the pipeline expects next to moto (idempotent): MLflow's artifact bucket and the decisions
    topic with an SQS queue subscribed. Returns the topic ARN and the queue URL."""
    import boto3

    creds = {"region_name": region, "aws_access_key_id": LOCAL_ACCESS_KEY, "aws_secret_access_key": LOCAL_SECRET_KEY}
    s3 = boto3.client("s3", endpoint_url=endpoints["s3"], **creds)
    s3.create_bucket(Bucket=MLFLOW_ARTIFACT_BUCKET)
    sns = boto3.client("sns", endpoint_url=endpoints["sns"], **creds)
    sqs = boto3.client("sqs", endpoint_url=endpoints["sqs"], **creds)
    topic = sns.create_topic(Name=NOTIFY_TOPIC)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=NOTIFY_TOPIC)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    return {"topic_arn": topic, "queue_url": queue_url}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answers(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers HTTP (any status) or raise with what went wrong."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with code {process.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered, even if not with 200
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last_error = exc
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s (last error: {last_error})")


def airflow_connection(endpoints: dict[str, str], region: str = DEFAULT_REGION) -> dict[str, Any]:
    """The `aws_default` connection (Airflow JSON form) routing each service to its local endpoint.

    Per-service `service_config` endpoints, not one global `endpoint_url`: a global URL would send SageMaker
    calls to moto's fake SageMaker instead of our server.
    """
    endpoints = {svc: url for svc, url in endpoints.items() if svc != "mlflow"}  # not an AWS service
    return {
        "conn_type": "aws",
        "login": LOCAL_ACCESS_KEY,
        "password": LOCAL_SECRET_KEY,
        "extra": {
            "region_name": region,
            "service_config": {svc: {"endpoint_url": url} for svc, url in sorted(endpoints.items())},
        },
    }


def client_env(
    endpoints: dict[str, str], region: str = DEFAULT_REGION, provisioned: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment for processes that should talk to the local stack (Airflow, the CLI, tests)."""
    aws = {svc: url for svc, url in endpoints.items() if svc != "mlflow"}
    env = {
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(airflow_connection(aws, region)),
        "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
        "AWS_DEFAULT_REGION": region,
        "INVENTORY_S3_ENDPOINT": endpoints["s3"],
        # a laptop's own files: the embedded stack reads a local file list (a shared worker does not)
        "INVENTORY_ALLOW_LOCAL_FILE_LIST": "true",
    }
    if "mlflow" in endpoints:
        env["INVENTORY_TRACKING_URI"] = endpoints["mlflow"]
    if provisioned:
        env["INVENTORY_SNS_TOPIC_ARN"] = provisioned["topic_arn"]
    return env


@dataclass
class _Running:
    spec: ServerSpec
    process: subprocess.Popen
    port: int
    url: str  # as clients reach it (advertised host)
    local_url: str  # as processes on this host reach it
    log_path: Path


@dataclass
class LocalStack:
    """The local stack as a context manager: `with LocalStack(dir) as stack: stack.endpoints["s3"]`.

    By default everything listens on 127.0.0.1 on free ports. In a container, `bind_host="0.0.0.0"`,
    fixed `ports` ({server name: port}) and `advertise_host` (the service's DNS name) make it reachable
    from other containers.
    """

    state_dir: Path
    region: str = DEFAULT_REGION
    servers: list[ServerSpec] = field(default_factory=default_servers)
    startup_timeout_s: float = 60.0
    bind_host: str = "127.0.0.1"
    advertise_host: str | None = None
    ports: dict[str, int] = field(default_factory=dict)
    _running: list[_Running] = field(default_factory=list, init=False)
    provisioned: dict[str, str] = field(default_factory=dict, init=False)

    @property
    def endpoints(self) -> dict[str, str]:
        return {svc: r.url for r in self._running for svc in r.spec.services}

    @property
    def local_endpoints(self) -> dict[str, str]:
        return {svc: r.local_url for r in self._running for svc in r.spec.services}

    @property
    def airflow_conn(self) -> dict[str, Any]:
        return airflow_connection({k: v for k, v in self.endpoints.items() if k != "mlflow"}, self.region)

    def env(self) -> dict[str, str]:
        return client_env(self.endpoints, self.region, self.provisioned)

    def start(self, while_others_start: Callable[[], object] | None = None) -> LocalStack:
        """Start every server and wait until each answers. `while_others_start` runs once moto (S3, SNS, SQS,
        Logs, CloudWatch) answers and is provisioned, while the slower servers start (the demo seeds its
        source bucket there)."""
        self.state_dir = Path(self.state_dir).resolve()  # job dirs under it must not depend on a cwd
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            # moto first (the others and the provisioning talk to it), then the rest start side by side
            first = [spec for spec in self.servers if spec.name == MOTO.name]
            for spec in first:
                self._wait(self._launch(spec))
                self.provisioned = provision(self.local_endpoints, self.region)
            others = [self._launch(spec) for spec in self.servers if spec not in first]
            if while_others_start is not None:
                while_others_start()
            for running in others:
                self._wait(running)
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, spec: ServerSpec) -> _Running:
        port = self.ports.get(spec.name) or free_port()
        local_url = f"http://127.0.0.1:{port}"
        host = self.advertise_host or ("127.0.0.1" if self.bind_host in ("0.0.0.0", "::") else self.bind_host)
        url = f"http://{host}:{port}"
        log_path = self.state_dir / f"{spec.name}.log"
        env = {**os.environ, **self._child_env(), **spec.env}
        if self.advertise_host:  # MLflow refuses Host headers other than localhost and IPs unless told
            env["MLFLOW_SERVER_ALLOWED_HOSTS"] = (
                f"{self.advertise_host},{self.advertise_host}:*,localhost:*,127.0.0.1:*"
            )
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                spec.command(self.bind_host, port, self.local_endpoints, self.state_dir),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: stopping it stops its children too
            )
        running = _Running(spec, process, port, url, local_url, log_path)
        self._running.append(running)
        return running

    def _wait(self, running: _Running) -> None:
        spec = running.spec
        timeout_s = max(self.startup_timeout_s, spec.startup_timeout_s)
        wait_until_answers(running.local_url + spec.health_path, timeout_s, running.process)
        services = ",".join(spec.services)
        log.info("local %s (%s) answering at %s, pid %d", spec.name, services, running.url, running.process.pid)

    def _child_env(self) -> dict[str, str]:
        env = {
            "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
            "AWS_DEFAULT_REGION": self.region,
            "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
            # MLflow's server writes artifacts to the local S3, and needs no GenAI job runner process
            "MLFLOW_S3_ENDPOINT_URL": self.local_endpoints.get("s3", ""),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        env.pop("AWS_PROFILE", None)
        return env

    def stop(self) -> None:
        for running in reversed(self._running):  # every server is told first, so they stop side by side
            _terminate_group(running.process.pid)
        for running in reversed(self._running):
            try:
                running.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(running.process.pid)
                running.process.wait(timeout=10)
        self._running.clear()

    def state(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "endpoints": self.endpoints,
            "provisioned": self.provisioned,
            "airflow_conn": self.airflow_conn,
            "servers": [
                {
                    "name": r.spec.name,
                    "pid": r.process.pid,
                    "port": r.port,
                    "url": r.url,
                    "log": str(r.log_path),
                    "create_time": _create_time(r.process.pid),
                }
                for r in self._running
            ],
        }

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _terminate_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --- CLI backing: a stack that outlives the command that started it ---------------------------------------


def running_state(state_dir: Path) -> dict[str, Any] | None:
    """The state of the stack `up` started in `state_dir`, if its processes are still the ones it started."""
    state_file = Path(state_dir).resolve() / STATE_FILE_NAME
    if not state_file.exists():
        return None
    state = json.loads(state_file.read_text())
    return state if _still_running(state) else None


def up(state_dir: Path, region: str = DEFAULT_REGION, **stack_options: Any) -> dict[str, Any]:
    """Start the stack detached, write the state file and return the state (with `state_file`). When a stack
    is already running there, return its state (`already_running: true`) instead: `up` is idempotent."""
    state_dir = Path(state_dir).resolve()  # the runner's job dirs live under it: never relative to a cwd
    state_file = state_dir / STATE_FILE_NAME
    running = running_state(state_dir)
    if running is not None:
        return {**running, "already_running": True}
    stack = LocalStack(state_dir, region=region, **stack_options).start()
    state = stack.state()
    state["state_file"] = str(state_file)
    state["already_running"] = False
    state_file.write_text(json.dumps(state, indent=2))
    # The processes live on; forget them here so nothing stops them when this object is collected.
    stack._running.clear()
    return state


def down(state_dir: Path) -> list[str]:
    """Stop exactly the processes recorded by `up` (pid and start time must both match)."""
    import psutil

    state_file = Path(state_dir) / STATE_FILE_NAME
    if not state_file.exists():
        return []
    state = json.loads(state_file.read_text())
    stopped = []
    for server in state.get("servers", []):
        if not _is_same_process(server):
            continue
        _terminate_group(server["pid"])
        try:
            psutil.Process(server["pid"]).wait(timeout=10)
        except psutil.TimeoutExpired:
            _kill_group(server["pid"])
        except psutil.NoSuchProcess:
            pass
        stopped.append(server["name"])
    state_file.unlink()
    return stopped


def _is_same_process(server: dict[str, Any]) -> bool:
    created = _create_time(server["pid"])
    return created is not None and server.get("create_time") is not None and abs(created - server["create_time"]) < 1.0


def _still_running(state: dict[str, Any]) -> bool:
    return any(_is_same_process(s) for s in state.get("servers", []))
