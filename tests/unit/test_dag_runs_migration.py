"""The demo's one Airflow process (`airflow.dag_runs`) migrates its metadata DB in a process of its own while it
warms up; a migration that fails ends the session before any run, its own output followed by a line saying so."""

from __future__ import annotations

import subprocess
import sys

from inventory_pipeline.airflow import dag_runs


def migration(script: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_failed_migration_is_relayed_and_stops_the_session(capsys):
    failed = migration("import sys; print('sqlite3.OperationalError: unable to open database file'); sys.exit(1)")
    assert dag_runs._finish_migration(failed) is False
    out = capsys.readouterr().out
    assert out.index("unable to open database file") < out.index("airflow db migrate failed (exit 1): no run can start")


def test_a_migration_that_succeeds_is_relayed_and_the_session_goes_on(capsys):
    assert dag_runs._finish_migration(migration("print('Database migration done!')")) is True
    out = capsys.readouterr().out
    assert "Database migration done!" in out
    assert "failed" not in out
