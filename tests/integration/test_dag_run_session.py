"""The demo's one Airflow process (`runner.DagRunSession`) migrates its metadata DB in a process of its own while
it warms up: a migration that fails ends the session before any run, with the migration's own output."""

from __future__ import annotations

from pathlib import Path

import pytest

from inventory_pipeline.airflow.runner import DagRunSession, airflow_env

pytestmark = pytest.mark.integration


def test_a_failed_migration_fails_the_first_run_with_its_output(tmp_path: Path):
    unreachable = tmp_path / "no-such-dir" / "airflow.db"  # SQLite cannot create a file in a missing folder
    env = airflow_env(tmp_path / "airflow", {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{unreachable}"})
    with DagRunSession(env) as session:
        result = session.run({}, tmp_path / "run.log")
    assert not result.ok
    assert result.run is None
    assert "airflow db migrate failed" in result.output, result.output[-3000:]
    assert "unable to open database file" in result.output
