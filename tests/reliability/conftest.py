"""Fixtures of the reliability tests: one recorded DAG run per session, shared by every test that asks for it."""

from dag_run_recording import recorded_run

__all__ = ["recorded_run"]
