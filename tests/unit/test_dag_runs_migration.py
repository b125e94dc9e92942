"""The demo's one Airflow process (`airflow.dag_runs`) migrates its metadata DB before anything else; a migration
that fails ends the session before any run, its traceback followed by a line saying so. (A migration that succeeds
is in every `DagRunSession` of the suite.)"""

from __future__ import annotations

import sqlite3

from inventory_pipeline.airflow import dag_runs


def test_a_failed_migration_says_so_and_stops_the_session(capsys):
    def migrate() -> None:
        raise sqlite3.OperationalError("unable to open database file")

    assert dag_runs._migrate(migrate) is False
    captured = capsys.readouterr()
    assert "unable to open database file" in captured.err  # the traceback
    assert "airflow db migrate failed (OperationalError): no run can start" in captured.out


def test_a_migration_that_exits_non_zero_says_so_and_one_that_exits_0_goes_on(capsys):
    def refused() -> None:
        raise SystemExit(2)

    assert dag_runs._migrate(refused) is False
    assert "airflow db migrate failed (exit 2): no run can start" in capsys.readouterr().out

    def done() -> None:
        raise SystemExit(0)

    assert dag_runs._migrate(done) is True
    assert dag_runs._migrate(lambda: None) is True
    assert "failed" not in capsys.readouterr().out
