"""docker-compose.yaml: `docker compose config` is not available here, so parse it and check its shape."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}


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
    from inventory_pipeline.local_aws import compose_setup

    services = compose["services"]
    local = services["local-aws"]
    assert local["profiles"] == ["local"]
    command = " ".join(local["entrypoint"])
    assert "local-stack up --foreground --host 0.0.0.0 --advertise-host local-aws" in command
    # the ports the setup's endpoints use are the ones the stack listens on and publishes
    for name, port in compose_setup.PORTS.items():
        assert f"--{name}-port {port}" in command and f"{port}:{port}" in local["ports"], name
    assert local["healthcheck"]["test"][-1].endswith(":5001/ping")
    setup = services["local-aws-setup"]
    assert setup["profiles"] == ["local"]
    assert setup["command"] == ["python", "-m", "inventory_pipeline.local_aws.compose_setup"]
    assert setup["depends_on"]["local-aws"]["condition"] == "service_healthy"
    assert setup["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    # Everything else runs without the profile (real AWS).
    assert all("profiles" not in s for n, s in services.items() if not n.startswith("local-aws"))


def test_the_local_profile_gives_the_dag_what_an_end_to_end_run_needs():
    """The connection reaches every service a run calls, and the Variables name a tracking server, the decisions
    topic and a seeded source: what `make demo` gives its runs (stack.client_env), on the compose host names."""
    import json

    from inventory_pipeline.local_aws import compose_setup
    from inventory_pipeline.local_aws.stack import client_env
    from inventory_pipeline.settings import Settings

    topic = "arn:aws:sns:us-east-1:123456789012:inventory-retraining-decisions"
    connection, variables = compose_setup.airflow_settings(topic)
    endpoints = {svc: cfg["endpoint_url"] for svc, cfg in connection["extra"]["service_config"].items()}
    assert endpoints == {
        "s3": "http://local-aws:5000",
        "logs": "http://local-aws:5000",
        "cloudwatch": "http://local-aws:5000",
        "sns": "http://local-aws:5000",
        "sqs": "http://local-aws:5000",
        "sagemaker": "http://local-aws:5001",
    }
    assert variables["INVENTORY_TRACKING_URI"] == "http://local-aws:5002"
    assert variables["INVENTORY_SNS_TOPIC_ARN"] == topic
    assert variables["INVENTORY_FILE_LIST"] == f"s3://{compose_setup.SOURCE_BUCKET}/file_list.json"
    demo = client_env(compose_setup.endpoints(), provisioned={"topic_arn": topic})
    assert json.loads(demo["AIRFLOW_CONN_AWS_DEFAULT"]) == connection  # the demo's connection, on other hosts
    # the settings a run reads from those Variables pass check_run_conf's checks
    settings = Settings.from_sources({}, variables)
    assert settings.tracking_uri and settings.sns_topic_arn == topic and settings.source_bucket != "aft-vbi-pds"


def test_image_builds_from_the_pinned_set():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "FROM apache/airflow:3.3.2-python3.11" in dockerfile
    assert "-r /opt/inventory/requirements.txt -c /opt/inventory/constraints.txt" in dockerfile
    assert "smdebug==1.0.34" in dockerfile
