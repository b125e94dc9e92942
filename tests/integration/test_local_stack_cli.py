"""The embedded stack as a place to work: `up` from any directory is idempotent and prints the running stack,
`env` prints the exports a shell needs (connection, migrated AIRFLOW_HOME, DAG/plugin folders, a created
project bucket), and `down` stops it all."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from inventory_pipeline.aws.clients import make_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "plugins")}
    return subprocess.run(
        [sys.executable, "-m", "inventory_pipeline.cli", "local-stack", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_up_is_idempotent_and_env_prints_what_a_shell_needs(tmp_path):
    state_dir = tmp_path / "stack"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = _cli("up", "--state-dir", str(state_dir), cwd=tmp_path)
    try:
        assert first.returncode == 0, first.stderr[-2000:]
        again = _cli("up", "--state-dir", str(state_dir), cwd=elsewhere)
        assert again.returncode == 0, again.stderr[-2000:]
        assert "already running" in again.stdout
        assert first.stdout.splitlines()[0] in again.stdout  # the same endpoints

        env = _cli("env", "--state-dir", str(state_dir), cwd=elsewhere)
        assert env.returncode == 0, env.stderr[-2000:]
        exports = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in env.stdout.splitlines())
        assert os.path.isabs(exports["AIRFLOW_HOME"]) and os.path.exists(
            os.path.join(exports["AIRFLOW_HOME"], "airflow.db")
        )
        assert exports["AIRFLOW__CORE__DAGS_FOLDER"] == os.path.join(ROOT, "dags")
        assert exports["AIRFLOW__CORE__PLUGINS_FOLDER"] == os.path.join(ROOT, "plugins")
        assert "service_config" in exports["AIRFLOW_CONN_AWS_DEFAULT"]
        s3 = make_client(
            "s3",
            endpoint_url=exports["INVENTORY_S3_ENDPOINT"],
            region_name="us-east-1",
            aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
        )
        assert exports["INVENTORY_BUCKET"] in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    finally:
        down = _cli("down", "--state-dir", str(state_dir), cwd=elsewhere)
    assert "moto" in down.stdout and "sagemaker" in down.stdout
    assert _cli("env", "--state-dir", str(state_dir), cwd=elsewhere).returncode == 1  # nothing running now


def test_the_compose_setup_writes_the_connection_and_variables_airflow_then_reads(tmp_path):
    """compose_setup's write into Airflow's database, read back the way a task and the CLI read them."""
    from inventory_pipeline.airflow.runner import airflow_bin, airflow_env, db_migrate

    env = airflow_env(tmp_path / "airflow")
    db_migrate(env)
    script = (
        "from inventory_pipeline.local_aws import compose_setup as c\n"
        "c._write_to_airflow(*c.airflow_settings('arn:aws:sns:us-east-1:1:t'))\n"
        "c._write_to_airflow(*c.airflow_settings('arn:aws:sns:us-east-1:1:t'))\n"  # again: idempotent
    )
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, timeout=300)
    got = subprocess.run(
        [airflow_bin(), "variables", "get", "INVENTORY_TRACKING_URI"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert got.stdout.strip().splitlines()[-1] == "http://local-aws:5002", got.stderr[-2000:]
    conn = subprocess.run(
        [airflow_bin(), "connections", "get", "aws_default", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "http://local-aws:5001" in conn.stdout and "local-aws:5000" in conn.stdout, conn.stderr[-2000:]
