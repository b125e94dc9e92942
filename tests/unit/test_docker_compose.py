"""docker-compose.yaml: `docker compose config` is not available here, so parse it and check its shape."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = {
    "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker",
}  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_has_the_official_airflow_3_services_and_backing_stores(compose):
    services = compose["services"]
    assert AIRFLOW_SERVICES | {"airflow-init", "postgres", "redis"} <= set(services)
    assert {"postgres-db-volume"} <= set(compose["volumes"])


@pytest.mark.parametrize("name", sorted(AIRFLOW_SERVICES | {"postgres", "redis"}))
def test_long_running_services_have_healthchecks(compose, name):
    check = compose["services"][name]["healthcheck"]
    assert check["test"] and check["interval"] and check["retries"] >= 3


@pytest.mark.parametrize("name", sorted(AIRFLOW_SERVICES))
def test_airflow_services_mount_and_install_the_project(compose, name):
    service = compose["services"][name]
    assert "./:/opt/inventory" in service["volumes"]
    assert "pip install --quiet --no-deps -e /opt/inventory" in " ".join(service["entrypoint"])
    env = service["environment"]
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/inventory/dags"
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == "/opt/inventory/plugins"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "postgres" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] == "python"
    assert "AIRFLOW_CONN_AWS_DEFAULT" not in env  # it would shadow the connection the local profile writes


def test_airflow_services_wait_for_init_and_backing_stores(compose):
    for name in AIRFLOW_SERVICES:
        deps = compose["services"][name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["airflow-init"]["condition"] == "service_completed_successfully"


def test_local_profile_adds_the_stack_and_points_aws_default_at_it(compose):
    import json

    services = compose["services"]
    local = services["local-aws"]
    assert local["profiles"] == ["local"]
    command = " ".join(local["entrypoint"])
    assert "local-stack up --foreground --host 0.0.0.0 --advertise-host local-aws" in command
    assert local["healthcheck"]["test"][-1].endswith(":5001/ping")
    conn = services["local-aws-connection"]
    assert conn["profiles"] == ["local"]
    assert conn["depends_on"]["local-aws"]["condition"] == "service_healthy"
    payload = json.loads(conn["command"][conn["command"].index("--conn-json") + 1])
    endpoints = {svc: cfg["endpoint_url"] for svc, cfg in payload["extra"]["service_config"].items()}
    assert endpoints == {
        "s3": "http://local-aws:5000", "logs": "http://local-aws:5000", "sagemaker": "http://local-aws:5001",
    }  # fmt: skip
    # Everything else runs without the profile (real AWS).
    assert all("profiles" not in s for n, s in services.items() if not n.startswith("local-aws"))


def test_image_builds_from_the_pinned_set():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "FROM apache/airflow:3.3.2-python3.11" in dockerfile
    assert "-r /opt/inventory/requirements.txt -c /opt/inventory/constraints.txt" in dockerfile
    assert "smdebug==1.0.34" in dockerfile
